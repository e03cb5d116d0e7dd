"""The edge agent's configuration: one pydantic-settings class, every variable SIGHTLINE_EDGE_*.

An agent runs beside a site's cameras, away from the stack, so it has settings of its own rather than
a share of the stack's: where the API is and the key it sends, the site, where its queue lives and how
much disk it may take, how it paces uploads, and which model it follows.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The API's rule for camera and site ids (workflows.batch_types.NAME_PATTERN; edge does not import
# workflows): refused at capture, so a frame the API would refuse never enters the queue.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_EDGE_", env_file=".env", extra="ignore")

    # The central API and an ingest key for it (`sightline keys create --role ingest --site SITE`).
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr = SecretStr("")
    site_id: str = "default"
    # Frames that do not name their camera (POST /frames without camera_id, files at the top of the
    # watched folder, the generated camera) are this camera's.
    camera_id: str = "edge-cam"

    # The queue (SQLite in WAL mode), the frame files and the last good model live here.
    data_dir: Path = Path(".sightline-edge")
    # The disk the queued frames may take. Past it new frames are refused with a clear error and a
    # metric; a frame the agent acknowledged is never dropped to make room.
    max_queue_bytes: int = Field(1024**3, ge=1)
    # The API's own limit (settings.max_frame_bytes): a larger frame would fail its whole batch.
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1)

    # POST /frames, /status, /metrics. Loopback only: the endpoint takes frames without a key.
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8010, ge=0, le=65535)

    # Capture sources besides POST /frames: a watched folder (files are taken in, then removed;
    # subfolders name cameras) and the generated camera (the demo's and the tests' camera).
    watch_dir: Path | None = None
    watch_interval_s: float = Field(0.5, gt=0)
    # A file modified more recently than this may still be being written: it waits for the next scan.
    watch_settle_s: float = Field(0.5, ge=0)
    camera_fps: float = Field(0.0, ge=0)  # 0: no generated camera
    camera_seed: int = 0

    # Batches are cut per camera by count and by time, like the API's camera streams.
    batch_max_frames: int = Field(32, ge=1, le=256)
    batch_max_wait_s: float = Field(2.0, gt=0)
    # Backlog (frames older than live_window_s) goes in bigger batches: the API's cost is per batch (a
    # workflow each), so a site catching up costs it a quarter of the workflows. At most the API's
    # max_frames_per_batch (256 by default); a batch it refuses as too large (413) is cut smaller.
    backfill_batch_max_frames: int = Field(128, ge=1, le=1024)
    # Uploads never exceed these rates, live or backlog, so a site back from an outage with an hour of
    # frames does not take the API's admission from every other site.
    rate_frames_per_s: float = Field(50.0, gt=0)
    rate_bytes_per_s: float = Field(8 * 1024 * 1024, gt=0)
    # After an outage: the frames of the last `live_window_s` first (the central view stays current
    # while the backlog fills in behind, oldest first), or strictly oldest first.
    drain_order: Literal["live-first", "oldest-first"] = "live-first"
    live_window_s: float = Field(10.0, gt=0)
    # Connection failures and 5xx without Retry-After back off exponentially, with full jitter.
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    # On SIGTERM, capture stops and uploads go on this long while frames remain (then the agent exits;
    # what is left stays queued for the next start).
    shutdown_drain_s: float = Field(5.0, ge=0)

    # The model the agent decides with: an alias the registry moves (a rollout's promotion or
    # rollback) or a version name; empty: no local decisions. Polled cheaply (ETag, 304).
    model_ref: str = "production"
    model_poll_interval_s: float = Field(30.0, gt=0)
    # Ed25519 public keys (raw, base64) a model's manifest must be signed by. Empty: the keys serving
    # trusts (SIGHTLINE_MODEL_TRUSTED_KEYS, and on the stack's own host its signing key).
    trusted_keys: list[str] = []
    model_threads: int = Field(1, ge=1)

    # Central predictions of uploaded frames are fetched and kept beside the local ones (disagreement
    # visible in `sightline edge status`), for this long.
    reconcile_interval_s: float = Field(5.0, gt=0)
    reconcile_give_up_s: float = Field(3600.0, gt=0)
    sent_retention_s: float = Field(24 * 3600.0, gt=0)

    # Each camera's central privacy settings are fetched from the API (and kept in the queue's database)
    # and its frames redacted with them before they are queued (edge.redaction); asked again this often.
    privacy_refresh_s: float = Field(30.0, gt=0)
    # Cameras that must never leave raw: while the API has not said how to redact them (never reached),
    # their frames are refused at capture rather than queued as they are.
    redact_cameras: list[str] = []
    # The API's bound on a frame's pixels (settings.max_frame_pixels): a redacted frame is decoded here.
    max_frame_pixels: int = Field(12_000_000, ge=1)

    @field_validator("site_id", "camera_id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                             "digit")
        return value

    @field_validator("listen_host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        host = "127.0.0.1" if value == "localhost" else value
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"listen_host {value!r} is not a loopback address: POST /frames takes frames without "
                             "a key, so it listens on this machine only")
        return value

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def local_url(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self.listen_port}"
