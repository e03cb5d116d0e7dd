"""What a worker process exports: the Temporal SDK's metrics (schedule-to-start latencies, task slots,
sticky cache: `temporal_*`), served by the SDK's Runtime on settings.worker_sdk_metrics_port, and
Sightline's own (activities.metrics) on settings.worker_metrics_port; and its spans (infra.telemetry)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.metrics import REGISTRY
from infra.log import get_logger
from infra.metric_labels import CAMERAS
from infra.ports import bindable
from infra.settings import Settings

log = get_logger(__name__)


def sdk_runtime(settings: Settings, port: int | None = None) -> Runtime | None:
    """A Runtime whose metrics Prometheus scrapes; None when the port is 0 (the SDK's default runtime).
    A client connected with it, and the workers built from that client, report through it."""
    port = settings.worker_sdk_metrics_port if port is None else port
    if not port:
        return None
    if not bindable(settings.metrics_host, port):
        log.warning("SDK metrics port in use: not exported by this worker", port=port)
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{settings.metrics_host}:{port}")))


def serve_worker_metrics(settings: Settings, port: int | None = None) -> WSGIServer | None:
    """Serve Sightline's worker metrics (a thread of this process); None when the port is 0."""
    CAMERAS.limit = settings.metrics_max_cameras
    port = settings.worker_metrics_port if port is None else port
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=settings.metrics_host, registry=REGISTRY)
    except OSError as exc:
        log.warning("metrics port in use: not exported by this worker", port=port, reason=str(exc))
        return None
    return server
