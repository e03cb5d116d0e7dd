from pathlib import Path

from infra.settings import Settings
from infra.store import LocalStore, S3Store, open_store


def test_environment_overrides_with_the_sightline_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGHTLINE_TEMPORAL_ADDRESS", "temporal:7233")
    monkeypatch.setenv("SIGHTLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIGHTLINE_MAX_FRAMES_PER_BATCH", "12")
    settings = Settings(_env_file=None)
    assert settings.temporal_address == "temporal:7233"
    assert settings.max_frames_per_batch == 12
    assert settings.resolved_object_store_url == f"file://{tmp_path}/objects"


def test_defaults_point_at_the_local_stack(monkeypatch):
    for name in ("SIGHTLINE_DATA_DIR", "SIGHTLINE_OBJECT_STORE_URL", "SIGHTLINE_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.data_dir == Path(".sightline")
    assert settings.resolved_api_url == "http://127.0.0.1:8000"
    assert settings.temporal_namespace == "default"


def test_store_urls(tmp_path, s3_endpoint):
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    s3 = open_store("s3://sightline-frames/prod", endpoint=s3_endpoint["endpoint"],
                    access_key=s3_endpoint["access_key"], secret_key=s3_endpoint["secret_key"])
    assert isinstance(s3, S3Store) and s3.prefix == "prod"
    s3.put("a/b", b"x")
    assert s3.list("a/") == ["a/b"]
