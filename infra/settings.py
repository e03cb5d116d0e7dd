"""All configuration in one pydantic-settings class; every variable starts with SIGHTLINE_."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_", env_file=".env", extra="ignore")

    # Where the local stack keeps its state: Temporal's SQLite file, Postgres, objects, logs, pids.
    data_dir: Path = Path(".sightline")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    # Task queues (DESIGN: orchestration, inference, training); tests give each test its own.
    orchestration_task_queue: str = "orchestration"
    inference_task_queue: str = "inference"
    training_task_queue: str = "training"
    worker_max_concurrent_activities: int = Field(16, ge=1)

    # Empty means "the Postgres server the local stack runs in the data dir".
    database_url: str = ""

    # file://<dir> (default: <data_dir>/objects) or s3://<bucket> with the endpoint and keys below.
    object_store_url: str = ""
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    # Empty starts (or joins) a local Ray head under the data dir.
    ray_address: str = ""
    # How serving trains model v1 when none is registered: "standard" (a few minutes on the CPU) or
    # "tiny" (a small 64 px model in under a minute, for CI and smoke tests).
    bootstrap_profile: Literal["standard", "tiny"] = "standard"
    # The Ray Serve HTTP endpoint the inference activities call.
    serving_url: str = "http://127.0.0.1:8001"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The URL clients and the demo use to reach the API; derived from host and port when empty.
    api_url: str = ""

    # Signs time-limited image URLs and cookie sessions; generated into the data dir when empty.
    secret_key: str = ""
    image_url_ttl_s: int = Field(900, ge=10)

    log_json: bool | None = None  # None: JSON when stdout is not a terminal
    log_level: str = "INFO"

    # Ingest limits.
    max_frames_per_batch: int = Field(256, ge=1)
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_frame_pixels: int = Field(40_000_000, ge=1)
    accepted_content_types: list[str] = ["image/jpeg", "image/png", "image/webp"]

    # Frames per classification activity; one activity per chunk, never one per frame.
    classify_chunk_size: int = Field(64, ge=1)

    # Live cameras: frames gather into a batch until this many arrive or this long after the first.
    camera_batch_max_frames: int = Field(32, ge=1)
    camera_batch_max_wait_s: float = Field(5.0, gt=0)

    # Routing after classification: below this confidence a frame goes to human review; a sample of
    # the confident ones goes too (so error rates can be estimated); a confident defect raises an alert.
    review_confidence_threshold: float = Field(0.80, ge=0, le=1)
    qa_sample_rate: float = Field(0.02, ge=0, le=1)
    alert_confidence_threshold: float = Field(0.90, ge=0, le=1)
    ok_labels: list[str] = ["ok"]
    reviews_required: int = Field(1, ge=1, le=2)

    # Human review: the SLA per priority (escalation when it passes), how long a claim holds before the
    # task returns to the queue, and where escalations are announced (empty: recorded, not sent).
    review_sla_seconds: dict[str, float] = {"low": 86400.0, "normal": 14400.0, "high": 3600.0, "urgent": 900.0}
    review_claim_lease_seconds: float = Field(600.0, gt=0)
    review_escalation_webhook_url: str = ""

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_object_store_url(self) -> str:
        return self.object_store_url or f"file://{self.resolved_data_dir / 'objects'}"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    def workflow_ui_url(self, workflow_id: str) -> str:
        """Where ops read a workflow's history in the Temporal Web UI."""
        return f"{self.temporal_ui_url}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
