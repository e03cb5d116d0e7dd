"""docker-compose.yml cannot run here (no Docker engine); check its shape against the settings, and that
it is closed: only the API published, no credential written in it, every secret from the env file."""

from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from infra.secret_key import SecretKeyMissing, require_configured_secret, secret_key
from infra.settings import Settings

ROOT = Path(__file__).parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
ENV = COMPOSE["x-sightline-env"]
# libpq's own variables, which psycopg reads: the database password travels as PGPASSWORD, never in a URL.
LIBPQ_VARIABLES = {"PGPASSWORD"}
# A variable whose name says it holds a credential must take its value from the env file.
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|PWD|SECRET|TOKEN|_KEY$|ACCESS_KEY|ROOT_USER|CREDENTIAL", re.I)
# `${NAME:?message}`: required, no default; compose refuses to start while it is empty.
REQUIRED_REFERENCE = re.compile(r"^\$\{([A-Z0-9_]+):\?[^}]*\}$")
# Credentials that have shipped as defaults somewhere: none may appear anywhere in the file.
KNOWN_DEFAULTS = ("minioadmin", "sightline-secret", "changeme", "change-me")


def _environments() -> list[tuple[str, dict]]:
    found = [("x-sightline-env", ENV)]
    for name, service in SERVICES.items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        found.append((name, environment))
    return found


def test_every_production_part_is_there_with_a_healthcheck():
    for name in ("temporal", "temporal-ui", "postgres", "minio", "ray-head", "api", "worker"):
        assert name in SERVICES, f"missing service {name}"
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"


def test_only_the_api_is_published():
    published = {name: service["ports"] for name, service in SERVICES.items() if service.get("ports")}
    others = {name: ports for name, ports in published.items() if name not in ("api", "temporal-ui", "grafana")}
    assert not others, f"services other than the API publish ports: {others}"
    assert published.get("api") == ["8000:8000"]
    # The Temporal UI and Grafana only on request (a profile) and only on this host's loopback.
    for name, profile in (("temporal-ui", "temporal-ui"), ("grafana", "dashboards")):
        ui = SERVICES[name]
        assert ui.get("profiles") == [profile]
        assert all(str(port).startswith("127.0.0.1:") for port in ui.get("ports", [])), ui["ports"]
    for name, service in SERVICES.items():
        assert "network_mode" not in service, f"{name} shares the host's network"
        assert not service.get("expose") or name == "api"


def test_no_literal_credential_anywhere():
    for default in KNOWN_DEFAULTS:
        assert default not in COMPOSE_TEXT.lower(), f"a known default credential is in the file: {default}"
    for where, environment in _environments():
        for key, value in environment.items():
            value = str(value)
            if CREDENTIAL_NAME.search(key):
                assert REQUIRED_REFERENCE.match(value), f"{where}: {key} must be ${{VAR:?...}} from the env file"
            parsed = urlparse(value) if "://" in value else None
            if parsed and parsed.netloc:
                assert parsed.password is None, f"{where}: {key} carries a password in its URL"
    # Every reference anywhere in the file is required (no `${X:-default}` fallbacks).
    for reference in re.findall(r"(?<!\$)\$\{[^}]*\}", COMPOSE_TEXT):
        assert REQUIRED_REFERENCE.match(reference), f"a reference with a default: {reference}"


def test_the_env_example_lists_every_secret_with_no_value():
    required = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):\?", COMPOSE_TEXT))
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert required and required == set(example), "the env example and the compose file name the same secrets"
    assert all(value == "" for value in example.values()), "the example must not carry values"


def test_the_app_uses_a_least_privilege_minio_user():
    assert ENV["SIGHTLINE_S3_ACCESS_KEY"].startswith("${SIGHTLINE_S3_ACCESS_KEY:?")
    assert "MINIO_ROOT" not in str(ENV), "the app must not hold MinIO's root credentials"
    init = SERVICES["minio-init"]
    script = "\n".join(init["command"])
    assert "mc admin policy create" in script and "mc admin user add" in script
    assert '"Resource": ["arn:aws:s3:::$$BUCKET/*"]' in script, "the app's policy is limited to its bucket"
    assert "s3:*" not in script
    for name in ("api", "worker", "ray-head"):
        assert SERVICES[name]["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}


def test_settings_refer_only_to_services_that_exist():
    fields = Settings.model_fields
    for key in ENV:
        if key in LIBPQ_VARIABLES:
            continue
        assert key.startswith("SIGHTLINE_") and key.removeprefix("SIGHTLINE_").lower() in fields, key
    hosts = {
        "SIGHTLINE_TEMPORAL_ADDRESS": ENV["SIGHTLINE_TEMPORAL_ADDRESS"].split(":")[0],
        "SIGHTLINE_DATABASE_URL": urlparse(ENV["SIGHTLINE_DATABASE_URL"]).hostname,
        "SIGHTLINE_S3_ENDPOINT": ENV["SIGHTLINE_S3_ENDPOINT"].split(":")[0],
        "SIGHTLINE_RAY_ADDRESS": ENV["SIGHTLINE_RAY_ADDRESS"].split(":")[0],
        "SIGHTLINE_SERVING_URL": urlparse(ENV["SIGHTLINE_SERVING_URL"]).hostname,
        "SIGHTLINE_OTLP_ENDPOINT": urlparse(ENV["SIGHTLINE_OTLP_ENDPOINT"]).hostname,
    }
    for key, host in hosts.items():
        assert host in SERVICES, f"{key} points at {host!r}, which is not a service"
    assert ENV["SIGHTLINE_OBJECT_STORE_URL"].startswith("s3://")
    assert ENV["SIGHTLINE_DEPLOYMENT"] == "production"


def test_app_services_run_modules_that_exist_and_wait_for_their_dependencies():
    for name in ("api", "worker", "ray-head"):
        service = SERVICES[name]
        module = service["command"][service["command"].index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, f"{name} runs missing module {module}"
        for dependency, condition in service["depends_on"].items():
            one_shot = SERVICES[dependency].get("restart") == "no"
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert dependency in SERVICES and condition == {"condition": expected}
    assert importlib.util.find_spec("workers.health") is not None


def test_migrations_run_once_in_a_job_the_app_services_wait_for():
    job = SERVICES["migrate"]
    assert job["command"] == ["sightline", "migrate"] and job.get("restart") == "no"
    assert job["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert job["environment"]["SIGHTLINE_DATABASE_URL"] == ENV["SIGHTLINE_DATABASE_URL"]
    for name in ("api", "worker", "ray-head"):
        assert SERVICES[name]["depends_on"].get("migrate") == {"condition": "service_completed_successfully"}, name
    # The image's `sightline` is the project's entry point, and it has the command.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, attribute = pyproject["project"]["scripts"]["sightline"].partition(":")
    assert module == "cli.main" and callable(getattr(importlib.import_module(module), attribute))
    assert "COPY cli cli" in (ROOT / "Dockerfile").read_text()
    import typer

    from cli.main import app

    assert "migrate" in typer.main.get_group(app).commands


def test_no_default_object_store_credentials_in_settings():
    settings = Settings(_env_file=None)
    assert settings.s3_access_key == "" and settings.s3_secret_key == ""


@pytest.mark.parametrize("overrides", [{"deployment": "production"}, {"api_host": "0.0.0.0"},
                                       {"deployment": "production", "secret_key": "short"}])
def test_the_api_refuses_to_start_outside_the_local_stack_without_a_secret(overrides, tmp_path):
    from api.main import create_app

    settings = Settings(_env_file=None, data_dir=tmp_path, **overrides)
    with pytest.raises(SecretKeyMissing, match="SIGHTLINE_SECRET_KEY"):
        create_app(settings)
    assert not (tmp_path / "secret_key").exists(), "no key may be generated outside the local stack"


def test_the_local_stack_and_a_configured_secret_start(tmp_path):
    """The local stack starts with a key it generates once and keeps; production with the configured one,
    and never writes a key of its own."""
    local = Settings(_env_file=None, data_dir=tmp_path / "local")
    require_configured_secret(local)  # loopback, local: a generated key is fine
    generated = secret_key(local)
    assert len(generated) >= 32 and (tmp_path / "local" / "secret_key").read_text() == generated
    assert secret_key(local) == generated, "generated once, then kept"
    configured = Settings(_env_file=None, data_dir=tmp_path / "prod", deployment="production", api_host="0.0.0.0",
                          secret_key="k" * 48)
    require_configured_secret(configured)
    assert secret_key(configured) == "k" * 48 and not (tmp_path / "prod" / "secret_key").exists()


def test_traces_go_to_jaeger_and_prometheus_scrapes_every_part_that_grafana_shows():
    assert ENV["SIGHTLINE_TRACE_EXPORTER"] == "otlp" and ENV["SIGHTLINE_METRICS_HOST"] == "0.0.0.0"
    for name in ("jaeger", "prometheus", "grafana"):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"
    assert not SERVICES["jaeger"].get("ports") and not SERVICES["prometheus"].get("ports")
    # Every part at the port its settings default to (infra/settings.py).
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    defaults = Settings(_env_file=None)
    assert targets == {"sightline-api": [f"api:{defaults.api_port}"],
                       "sightline-worker": [f"worker:{defaults.worker_metrics_port}"],
                       "temporal-sdk": [f"worker:{defaults.worker_sdk_metrics_port}"],
                       "ray-serve": [f"ray-head:{defaults.serving_metrics_port}"]}
    # The API's /metrics needs an ops key: a secret file from the env file, mounted where the config reads it.
    api_job = next(job for job in config["scrape_configs"] if job["job_name"] == "sightline-api")
    mounted = SERVICES["prometheus"]["secrets"][0]
    assert api_job["authorization"]["credentials_file"] == mounted["target"]
    assert REQUIRED_REFERENCE.match(COMPOSE["secrets"][mounted["source"]]["file"])
    # Grafana provisions the dashboards of infra/grafana/dashboards and both data sources.
    volumes = SERVICES["grafana"]["volumes"]
    assert "./infra/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    provider = yaml.safe_load((ROOT / "infra/grafana/provisioning/dashboards/sightline.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((ROOT / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert {d["url"] for d in sources["datasources"]} == {"http://prometheus:9090", "http://jaeger:16686"}
    assert sorted(p.name for p in (ROOT / "infra/grafana/dashboards").glob("*.json")) == [
        "ray-serve.json", "sightline-vision.json", "temporal-sdk.json"]
