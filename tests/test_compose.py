"""docker-compose.yml cannot run here (no Docker engine); check its shape against the settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse

import yaml

from infra.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).parent.parent / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_production_part_is_there_with_a_healthcheck():
    for name in ("temporal", "temporal-ui", "postgres", "minio", "ray-head", "api", "worker"):
        assert name in SERVICES, f"missing service {name}"
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"


def test_settings_refer_only_to_services_that_exist():
    env = COMPOSE["x-sightline-env"]
    fields = Settings.model_fields
    for key in env:
        assert key.startswith("SIGHTLINE_") and key.removeprefix("SIGHTLINE_").lower() in fields, key
    hosts = {
        "SIGHTLINE_TEMPORAL_ADDRESS": env["SIGHTLINE_TEMPORAL_ADDRESS"].split(":")[0],
        "SIGHTLINE_DATABASE_URL": urlparse(env["SIGHTLINE_DATABASE_URL"]).hostname,
        "SIGHTLINE_S3_ENDPOINT": env["SIGHTLINE_S3_ENDPOINT"].split(":")[0],
        "SIGHTLINE_RAY_ADDRESS": env["SIGHTLINE_RAY_ADDRESS"].split(":")[0],
        "SIGHTLINE_SERVING_URL": urlparse(env["SIGHTLINE_SERVING_URL"]).hostname,
    }
    for key, host in hosts.items():
        assert host in SERVICES, f"{key} points at {host!r}, which is not a service"
    assert env["SIGHTLINE_OBJECT_STORE_URL"].startswith("s3://")


def test_app_services_run_modules_that_exist_and_wait_for_their_dependencies():
    for name in ("api", "worker", "ray-head"):
        service = SERVICES[name]
        module = service["command"][service["command"].index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, f"{name} runs missing module {module}"
        for dependency, condition in service["depends_on"].items():
            assert dependency in SERVICES and condition == {"condition": "service_healthy"}
    assert importlib.util.find_spec("workers.health") is not None
