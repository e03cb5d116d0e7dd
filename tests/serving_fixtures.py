"""Session fixtures of the serving tests: one tiny model trained once and registered as production,
and one real Ray Serve application started once. Both stop what they started.

Test modules import these fixtures, which gives every module its own copy of each definition; the
copies share one underlying object through `_shared`, so the model is trained once and Serve started
once per session whichever module runs first. (Listing this module in the root conftest's
`pytest_plugins` would make the sharing unnecessary.)"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from infra.postgres_server import free_port
from infra.store import LocalStore
from infra.telemetry import TracingOptions
from serving.config import ServingConfig
from vision.registry import ModelRegistry
from vision.training import PROFILES, TrainingResult, train

# Small and quick: 64 px inputs, a few hundred frames, a few epochs. Enough to beat chance by far.
TINY = PROFILES["tiny"]


_shared: dict = {}


@pytest.fixture(scope="session")
def serving_tmp():
    if "tmp" in _shared:
        yield _shared["tmp"]
        return
    # Short and under /tmp: Ray puts Unix sockets in its temp dir and their paths have a length limit.
    path = _shared["tmp"] = Path(tempfile.mkdtemp(prefix="sl-serve-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def model_store(serving_tmp) -> LocalStore:
    return LocalStore(serving_tmp / "objects")


@pytest.fixture(scope="session")
def trained_model() -> TrainingResult:
    if "trained" not in _shared:
        _shared["trained"] = train(TINY)
    return _shared["trained"]


@pytest.fixture(scope="session")
def registry(postgres_url) -> ModelRegistry:
    return ModelRegistry(postgres_url)


@pytest.fixture(scope="session")
def production_model(registry, model_store, trained_model):
    """The tiny model registered and made production; returns its ModelVersion."""
    from vision.publishing import register_trained

    if "production" not in _shared:
        version = register_trained(registry, model_store, trained_model, created_by="tests")
        registry.set_alias("production", version.version, "tests", "session fixture")
        _shared["production"] = registry.get(version.version)
    return _shared["production"]


def serving_traces_dir(serving_tmp: Path) -> Path:
    """Where the replicas' spans go (infra.telemetry's file exporter): tests/test_observability reads them."""
    return serving_tmp / "traces"


@pytest.fixture(scope="session")
def serving_config_for(postgres_url, model_store, serving_tmp) -> ServingConfig:
    """The application's config in these tests: the onnxruntime backend on the session's store, spans to
    files under the session's serving dir."""
    return ServingConfig(database_url=postgres_url, store_url=f"file://{model_store.root}", backend="onnxruntime",
                         backend_threads=1, alias_ttl_s=0.5, preprocess_threads=2,
                         tracing=TracingOptions("file", str(serving_traces_dir(serving_tmp))))


@pytest.fixture(scope="session")
def serving_url(serving_config_for, production_model, serving_tmp):
    """Base URL of the real Ray Serve application (onnxruntime backend) on a free port."""
    from serving.app import AppOptions
    from serving.cluster import start_ray
    from serving.deploy import run_app, stop

    if "serving_url" in _shared:
        yield _shared["serving_url"]
        return
    ray_dir = serving_tmp / "ray"
    ray_dir.mkdir()
    port = free_port()
    _shared["serving_metrics_port"] = free_port()  # Ray's Prometheus export (Serve's metrics and the replicas')
    start_ray(temp_dir=str(ray_dir), num_cpus=2, metrics_export_port=_shared["serving_metrics_port"])
    try:
        run_app(serving_config_for, "127.0.0.1", port, AppOptions())
        _shared["serving_url"] = f"http://127.0.0.1:{port}"
        yield _shared["serving_url"]
    finally:
        _shared.pop("serving_url", None)
        stop()


@pytest.fixture(scope="session")
def serving_metrics_url(serving_url) -> str:
    """Ray's metrics export endpoint of the session's Serve application."""
    return f"http://127.0.0.1:{_shared['serving_metrics_port']}/metrics"
