"""The Ray cluster the Serve application runs on: a local head of our own (the local stack), or a
cluster given by address; and joining it from another process, as an inference worker does when it
reaches the application through its handle instead of HTTP.

A local head keeps everything under the data dir: its temp dir (sockets, logs), its address, and the
token Ray's authentication asks every process that joins for. Only processes that can read the data
dir can join.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from infra.log import get_logger
from infra.ports import bindable
from infra.settings import Settings

log = get_logger(__name__)

NAMESPACE = "sightline"


def ray_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / "ray"


def _use_token(settings: Settings) -> None:
    """Ray token authentication with a token of this data dir, made once (readable by its owner only)."""
    path = ray_dir(settings) / "auth_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    # Ray reads its configuration when it is imported (serving imports it early): refresh it so this
    # process sees token mode, as Ray's own token set-up does.
    from ray._raylet import Config  # type: ignore[attr-defined]  # a compiled module; its stub omits it

    Config.initialize("")


# Ray Serve's housekeeping, which every process of a head started here inherits from this one's
# environment: the controller's reconcile loop every second rather than ten times a second, and replica
# metrics exported every two seconds rather than every 100 ms. On 2 cores an idle application cost
# 136 ms of CPU per second with the defaults, 88 with these. The cost: the controller acts on a failed
# health check or a redeploy up to a second later. An operator's own values win.
SERVE_HOUSEKEEPING = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "2000"}


def start_ray(address: str = "", temp_dir: str | None = None, num_cpus: int | None = None,
              metrics_export_port: int | None = None) -> None:
    """Join the cluster at `address`, or start a new local head whose files live in `temp_dir`, its
    Prometheus metrics (Serve's and the replicas' own) on `metrics_export_port` (None: a port Ray picks)."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        for name, value in SERVE_HOUSEKEEPING.items():
            os.environ.setdefault(name, value)
        # worker_niceness 0: Ray starts workers at nice 15 by default, which lets any other process on
        # the host starve the Serve replicas; here the replicas are the service.
        # address="local": always a new head of our own, never some other Ray found running on the host.
        ray.init(address="local", _temp_dir=temp_dir, num_cpus=num_cpus, include_dashboard=False,
                 namespace=NAMESPACE, log_to_driver=False, object_store_memory=512 * 1024 * 1024,
                 _system_config={"worker_niceness": 0}, _metrics_export_port=metrics_export_port)


def start_stack_head(settings: Settings) -> str:
    """The local stack's Ray: settings.ray_address when given, else a head under the data dir whose
    address is written there for the inference worker to join. Returns the address."""
    import ray

    if settings.ray_address:
        start_ray(settings.ray_address)
        return settings.ray_address
    _use_token(settings)
    ray_dir(settings).mkdir(parents=True, exist_ok=True)
    port = settings.serving_metrics_port or None
    if port and not bindable(settings.metrics_host, port):
        # Ray fails to start its node on a taken export port; serving matters more than its metrics.
        log.warning("serving metrics port in use: Ray picks another", port=port)
        port = None
    start_ray(temp_dir=str(ray_dir(settings)), metrics_export_port=port)
    address = str(ray.get_runtime_context().gcs_address)
    (ray_dir(settings) / "address").write_text(address)
    return address


def join_stack(settings: Settings) -> None:
    """Connect this process to the stack's Ray cluster as a driver (for Serve handles)."""
    import ray

    if ray.is_initialized():
        return
    address = settings.ray_address
    if not address:
        _use_token(settings)
        try:
            address = (ray_dir(settings) / "address").read_text().strip()
        except FileNotFoundError:
            raise RuntimeError("the serving process has not started Ray yet: no address under "
                               f"{ray_dir(settings)}; start serving first (`sightline up` does)") from None
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
