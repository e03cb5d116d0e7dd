"""What every replica of the Serve application needs to reach its data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.store import ObjectStore, open_store


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
    max_frame_pixels: int = 40_000_000

    def open_store(self) -> ObjectStore:
        return open_store(self.store_url, **self.store_options)
