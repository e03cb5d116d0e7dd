"""Run the inference service as a long-lived process: `python -m serving.deploy`.

Joins the Ray cluster at settings.ray_address, or starts a local head whose files live under the data
dir; runs the Serve application with HTTP on the host and port of settings.serving_url; stays up
until SIGTERM or SIGINT, then shuts Serve and Ray down.

When no version has the `production` alias yet, it trains and registers version 1 first (the same as
`sightline model bootstrap`, a few minutes on the CPU) and says so in the log; `--no-bootstrap`
makes it fail with a clear message instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from infra.log import configure_logging, get_logger
from infra.schema_migrations import require_migrated
from infra.settings import Settings, get_settings
from serving.app import APP_NAME, AppOptions, build_app, resolved_layout
from serving.cluster import start_stack_head
from serving.config import ServingConfig

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

log = get_logger(__name__)


def serving_config(settings: Settings, database_url: str, backend: str = "auto",
                   backend_threads: int | None = None) -> ServingConfig:
    from infra.telemetry import tracing_options
    from vision.signatures import trusted_keys_from_settings

    return ServingConfig(
        database_url=database_url,
        store_url=settings.resolved_object_store_url,
        store_options={"endpoint": settings.s3_endpoint, "access_key": settings.s3_access_key,
                       "secret_key": settings.s3_secret_key, "secure": settings.s3_secure,
                       "region": settings.s3_region},
        backend=backend,
        backend_threads=backend_threads,
        max_frame_pixels=settings.max_frame_pixels,
        trusted_keys=trusted_keys_from_settings(settings),
        tracing=tracing_options(settings),
    )


def run_app(config: ServingConfig, host: str, port: int, options: AppOptions) -> DeploymentHandle:
    """Start Serve's HTTP proxy on host:port and deploy the application; blocks until it is ready."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_app(config, options), name=APP_NAME, route_prefix="/")


def classifier_cpus(classifier_replicas: int, preprocessor_replicas: int,
                    preprocessor_cpus: float = AppOptions.preprocessor_cpus) -> float:
    """Ray CPUs per classifier replica (placement only, not a limit): at most one, and few enough that
    every replica fits on this machine when it is the whole cluster."""
    cpus = os.cpu_count() or 1
    return max(0.1, min(1.0, (cpus - preprocessor_cpus * preprocessor_replicas) / classifier_replicas))


def stop(shutdown_ray: bool = True) -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        if shutdown_ray:
            ray.shutdown()


def ensure_production_model(config: ServingConfig, settings: Settings, bootstrap: bool) -> str:
    from infra.store import store_from_settings
    from vision.publishing import bootstrap as bootstrap_model
    from vision.registry import ModelNotFound, ModelRegistry

    registry = ModelRegistry(config.database_url)
    try:
        return registry.resolve("production").version
    except ModelNotFound:
        if not bootstrap:
            raise SystemExit("no model version has the alias 'production': "
                             "run `sightline model bootstrap` first") from None
    log.info("no production model yet: training version 1 on generated frames (a few minutes on the CPU)",
             task=settings.bootstrap_task)
    from vision.detector_training import DETECTOR_PROFILES
    from vision.training import PROFILES

    first = (DETECTOR_PROFILES[settings.bootstrap_profile] if settings.bootstrap_task == "detection"
             else PROFILES[settings.bootstrap_profile])
    version = bootstrap_model(registry, store_from_settings(settings), first,
                              progress=lambda p: log.info("training", **p))
    log.info("bootstrapped production model", version=version.version, metrics=version.metrics)
    return version.version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, torch-cuda, torch-cpu or tensorrt")
    parser.add_argument("--no-bootstrap", action="store_true",
                        help="fail instead of training v1 when no production model exists")
    parser.add_argument("--preprocessor-replicas", type=int, default=AppOptions.preprocessor_replicas)
    parser.add_argument("--classifier-replicas", type=int, default=AppOptions.classifier_replicas)
    parser.add_argument("--backend-threads", type=int, default=None,
                        help="threads per classifier replica (default: every core); on a small CPU model, one "
                             "single-threaded replica per core uses the cores better (see bench/serving.py)")
    parser.add_argument("--layout", default=None, choices=("auto", "pair", "fused"),
                        help="fused (CPU hosts), pair (GPU) or auto (default: the settings' serving_layout)")
    parser.add_argument("--max-batch-size", type=int, default=AppOptions.max_batch_size)
    parser.add_argument("--batch-wait-ms", type=float, default=AppOptions.batch_wait_timeout_s * 1000)
    args = parser.parse_args(argv)

    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level, service="serving")
    from infra.stack_urls import database_url

    db_url = database_url(settings)
    require_migrated(db_url)  # applied by `sightline migrate`, never by serving
    config = serving_config(settings, db_url, args.backend, args.backend_threads)
    version = ensure_production_model(config, settings, bootstrap=not args.no_bootstrap)

    url = urlparse(settings.serving_url)
    start_stack_head(settings)
    # After ray.init, which installs handlers of its own: SIGTERM must lead to an orderly shutdown of
    # Serve and Ray (the `finally` below), not to an exit that leaves Ray's agents behind.
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        options = AppOptions(
            preprocessor_replicas=args.preprocessor_replicas, classifier_replicas=args.classifier_replicas,
            classifier_cpus=classifier_cpus(args.classifier_replicas, args.preprocessor_replicas),
            max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
            layout=args.layout or settings.serving_layout)
        run_app(config, url.hostname or "127.0.0.1", url.port or 8001, options)
        log.info("inference service up", url=settings.serving_url, production=version, backend=args.backend,
                 layout=resolved_layout(config, options))
        stopping.wait()
        log.info("stopping inference service")
    finally:
        stop()


if __name__ == "__main__":
    main(sys.argv[1:])
