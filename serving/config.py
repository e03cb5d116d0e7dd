"""What every replica of the Serve application needs to reach its data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.settings import get_settings
from infra.store import ObjectStore, open_store
from infra.telemetry import TracingOptions
from vision.signatures import trusted_keys_from_settings


def default_trusted_keys() -> tuple[str, ...]:
    """The public keys of this process's settings (the signing key in the data dir, by default): the
    process that builds the config is the one that knows them; replicas elsewhere only receive them."""
    return trusted_keys_from_settings(get_settings())


@dataclass
class ServingConfig:
    """Plain values, so Ray can ship it to any node."""

    database_url: str
    store_url: str
    store_options: dict[str, Any] = field(default_factory=dict)  # endpoint, keys, ... for open_store
    backend: str = "auto"
    preload: tuple[str, ...] = ("production",)
    # Alias lookups are cached this long, so a promotion reaches serving within seconds, no redeploy.
    alias_ttl_s: float = 2.0
    backend_threads: int | None = None
    # Requests one preprocessor replica prepares at once. Scale preprocessing with replicas, not
    # threads: threads of one process contend for the GIL around the decoding, and on 2 cores four of
    # them cost 0.75 ms of CPU per frame where one costs 0.48 (bench/serving.py's CPU breakdown).
    preprocess_threads: int = 1
    # The fused layout's passes through the model: single-threaded onnxruntime spent 1.50 ms of CPU a
    # frame (mobilenet_v3_small, 128 px) in passes of 8 frames, 1.55 in 16, 1.78 in 32 and 1.80 in 64,
    # where two threads on passes of 64 spent 2.0.
    infer_chunk: int = 8
    max_frame_pixels: int = 12_000_000  # settings.max_frame_pixels; serving.deploy passes the configured one
    # Ed25519 public keys (raw, base64) whose signatures on a version's manifest serving accepts; a
    # version signed by none of them, or not signed, is refused.
    trusted_keys: tuple[str, ...] = field(default_factory=default_trusted_keys)
    # Where each replica's spans go (infra.telemetry; none by default).
    tracing: TracingOptions = field(default_factory=TracingOptions)

    def open_store(self) -> ObjectStore:
        return open_store(self.store_url, **self.store_options)
