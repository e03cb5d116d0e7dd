"""All configuration in one pydantic-settings class; every variable starts with SIGHTLINE_."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_", env_file=".env", extra="ignore")

    # Where the local stack keeps its state: Temporal's SQLite file, Postgres, objects, logs, pids.
    data_dir: Path = Path(".sightline")
    # "local": the stack on this machine (`sightline up`), which may generate its secrets into the data
    # dir. "production": every secret must come from the environment; the API refuses to start without
    # SIGHTLINE_SECRET_KEY (it refuses too whenever it listens on a non-loopback address).
    deployment: Literal["local", "production"] = "local"

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    # Task queues (DESIGN: orchestration, inference, training); tests give each test its own.
    orchestration_task_queue: str = "orchestration"
    inference_task_queue: str = "inference"
    training_task_queue: str = "training"
    # Evidently's drift checks take seconds of CPU each: their own queue keeps them off the workers that
    # move batches and reviews along, and lets them scale (or be placed) apart.
    drift_task_queue: str = "drift"
    # Worker Versioning (README, "Changing a workflow"): workers of a build join this deployment under
    # this build id, short-lived workflows pinned to the build that started them. Empty: unversioned
    # workers (the tests'); the local stack runs build "local", production the image's version.
    worker_deployment_name: str = "sightline"
    worker_build_id: str = Field("", max_length=200)
    # A worker of a new build makes it the deployment's current version once every task queue of the
    # current one is polled by it; off: ops promote it (`temporal worker deployment set-current-version`).
    worker_becomes_current: bool = True
    worker_max_concurrent_activities: int = Field(16, ge=1)
    worker_max_concurrent_workflow_tasks: int = Field(16, ge=1)
    # Workflows kept in memory between tasks: a batch's next task then needs no replay of its history.
    worker_max_cached_workflows: int = Field(1000, ge=0)

    # Empty means "the Postgres server the local stack runs in the data dir".
    database_url: str = ""

    # file://<dir> (default: <data_dir>/objects) or s3://<bucket> with the endpoint and keys below.
    object_store_url: str = ""
    s3_endpoint: str = "127.0.0.1:9000"
    # No defaults: an s3:// store needs keys from the environment (production: a least-privilege user
    # limited to the bucket, never the MinIO root user).
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    # Empty starts (or joins) a local Ray head under the data dir.
    ray_address: str = ""
    # How serving trains model v1 when none is registered: "standard" (a few minutes on the CPU) or
    # "tiny" (a small 64 px model in under a minute, for CI and smoke tests).
    bootstrap_profile: Literal["standard", "tiny"] = "standard"
    # What model v1 answers: "classification" (a label per frame) or "detection" (boxes per frame: the
    # detector of vision.detector_training, same profile names; "standard" takes 1-2 minutes on idle cores).
    bootstrap_task: Literal["classification", "detection"] = "classification"
    # The Ray Serve HTTP endpoint (outside callers; the inference activities when the transport is http).
    serving_url: str = "http://127.0.0.1:8001"
    # How the inference worker reaches the Serve application: "http" through Serve's proxy, or
    # "handle", joining the serving Ray cluster as a driver (no proxy hop, no JSON). bench/ingest.py
    # measures both.
    serving_transport: Literal["http", "handle"] = "http"
    # How the Serve application is laid out: "fused" (each replica fetches, decodes and classifies, one
    # per core: CPU hosts), "pair" (preprocessor replicas before a batching classifier: a GPU's layout),
    # or "auto": fused unless the classifier runs on a GPU.
    serving_layout: Literal["auto", "pair", "fused"] = "auto"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The URL clients and the demo use to reach the API; derived from host and port when empty.
    api_url: str = ""

    # Signs time-limited image URLs and the sign-in form's CSRF cookie; generated into the data dir when
    # empty, which only the local stack may do (see `deployment`).
    secret_key: str = ""
    image_url_ttl_s: int = Field(900, ge=10)
    # Reviewer page sessions live server-side (api.sessions): this long after sign-in they end. The cookie
    # is Secure when the request came over HTTPS; True or False forces it (behind a TLS-terminating
    # proxy that does not forward the scheme, set True).
    review_session_max_age_s: int = Field(12 * 3600, ge=60)
    session_cookie_secure: bool | None = None

    log_json: bool | None = None  # None: JSON when stdout is not a terminal
    log_level: str = "INFO"

    # Ingest limits. Every request body is capped before it is read; a batch's frames are held in memory
    # until stored, so the cap bounds that too.
    max_request_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    max_frames_per_batch: int = Field(256, ge=1, le=1024)
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1)
    # Decoded pixels per frame (width x height), checked from the header before decoding: 12 MP is about
    # 36 MB of RGB. Pillow's own bomb limit is set to the same number (vision.decode).
    max_frame_pixels: int = Field(12_000_000, ge=1)
    accepted_content_types: list[str] = ["image/jpeg", "image/png", "image/webp"]

    # Frames per classification activity; one activity per chunk, never one per frame. Serving batches
    # across activities anyway, so a whole batch is one chunk unless batches grow past this.
    classify_chunk_size: int = Field(256, ge=1)
    # Admission: past this many batches received or running per site, the API answers 429 with
    # Retry-After instead of queueing without bound. Accepted batches are never dropped.
    max_batches_in_flight_per_site: int = Field(64, ge=1)
    admission_retry_after_s: int = Field(2, ge=1)
    # A batch still 'received' this long after it was recorded lost its request before its workflow
    # started (Temporal away, the API killed): a Schedule sweeps for such batches this often and starts
    # them, or releases them when their frames were never stored, so none holds a slot for good.
    stale_batch_after_s: float = Field(120.0, gt=0)
    stale_batch_sweep_interval_s: float = Field(60.0, gt=0)

    # ---- retention and deletion (issue 24): README "Retention and deletion" ----
    # Days each kind of record is kept (0: for ever); a site overrides any of them through
    # PUT /v1/sites/{site}/retention. Frames held by a model trained on them (not retired) are kept
    # whatever their age. A Schedule runs the RetentionWorkflow this often; each of its chunks removes
    # at most `retention_chunk_size` records and a run continues as new after `retention_chunks_per_run`.
    retention_frames_days: int = Field(90, ge=0)
    retention_predictions_days: int = Field(90, ge=0)
    retention_review_tasks_days: int = Field(180, ge=0)
    retention_drift_reports_days: int = Field(365, ge=0)
    retention_interval_s: float = Field(3600.0, gt=0)
    retention_chunk_size: int = Field(500, ge=1)
    retention_chunks_per_run: int = Field(50, ge=1)
    # A DeletionWorkflow removes this many frames per activity and continues as new after this many chunks.
    deletion_chunk_size: int = Field(200, ge=1)
    deletion_chunks_per_run: int = Field(50, ge=1)

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
    # The longest lease a reviewer may ask for, how many unexpired claims one reviewer may hold at once,
    # and how long "next task" may take overall before it answers 503 (it skips unresponsive tasks).
    review_max_lease_seconds: float = Field(1800.0, gt=0, le=4 * 3600)
    review_max_claims_per_reviewer: int = Field(5, ge=1)
    review_next_timeout_s: float = Field(5.0, gt=0, le=60)

    # Webhooks go only to public addresses, checked when registered and again at every delivery (the
    # connection goes to the checked address). Networks listed here are allowed besides: the local demo
    # and the tests list the loopback ones ("127.0.0.0/8", "::1/128"); an operator may list an internal
    # receiver's network on purpose. Empty (the default): public addresses only.
    webhook_allowed_networks: list[str] = []
    # After `sightline webhooks rotate`, deliveries are signed with the new and the previous secret for
    # this long, so receivers can switch without dropping a delivery.
    webhook_secret_overlap_s: float = Field(24 * 3600.0, ge=0)

    # ---- the loop: model signatures, drift checks, the retraining policy (issue 10) ----
    # Ed25519 key that signs every model version's manifest (PEM, or the raw key in base64); empty: one
    # generated once into the data dir, shared by every process of the local stack.
    model_signing_key: str = ""
    # Public keys (raw, base64) serving trusts besides the signing key's own; set without a signing key
    # on hosts that only verify.
    model_trusted_keys: list[str] = []
    # Drift checks run per site every this many seconds (a Temporal Schedule the worker keeps current)
    # and on demand, comparing the site's last `drift_window_frames` frames with production's reference.
    drift_check_interval_s: float = Field(3600.0, gt=0)
    drift_window_frames: int = Field(300, ge=10)
    # Fewer current frames than this: the report says insufficient_data and nothing is decided.
    drift_min_frames: int = Field(100, ge=1)
    # A site has drifted when at least this share of the checked columns drift (Evidently's tests).
    drift_column_share: float = Field(0.3, gt=0, le=1)
    # A scheduled sweep checks the sites that sent frames within this many hours.
    drift_active_site_hours: float = Field(24.0, gt=0)
    # Where the signed `drift.detected` webhook goes when drift does not start retraining; empty: the
    # decision is recorded and nothing is sent.
    drift_webhook_url: str = ""
    # On drift, retrain when at least this many reviewed labels arrived since production was trained and
    # the last retraining started longer ago than the cooldown; otherwise notify and wait for labels.
    retraining_min_new_labels: int = Field(200, ge=0)
    retraining_cooldown_s: float = Field(6 * 3600.0, ge=0)
    # A candidate is handed to rollout only when its accuracy beats production's by this margin.
    retraining_min_improvement: float = Field(0.01, ge=0, le=1)
    # Retraining defaults (POST /v1/retraining and `sightline retrain` may override them): the base
    # generated set and input size of a bootstrap profile, epochs of fine-tuning from the production
    # weights, the share of each batch drawn from reviewed frames, and the share of reviewed frames held
    # out to evaluate on.
    retraining_profile: Literal["standard", "tiny", "micro"] = "standard"
    retraining_epochs: int = Field(6, ge=1)
    retraining_reviewed_share: float = Field(0.5, ge=0, lt=1)
    retraining_reviewed_holdout_pct: int = Field(20, ge=0, le=50)
    # Training heartbeats: a killed training worker's job is retried (from its last epoch checkpoint)
    # once this long passes without one; and the longest one training run may take.
    training_heartbeat_timeout_s: float = Field(30.0, gt=0)
    training_timeout_s: float = Field(4 * 3600.0, gt=0)

    # ---- camera health (issue 23): image quality against each camera's calibrated range, frozen images ----
    # Judged for every classified chunk (vision.camera_health). A camera calibrates on its first this many
    # accepted frames; it is degraded when the average of its last `window_frames` frames leaves the band
    # of `tolerance` standard deviations of a calibration frame, or when `frozen_frames` frames in a row
    # have the same bytes. `camera.degraded` / `camera.recovered` go to the camera's batch webhook and to
    # this URL (empty: the camera's webhook only). Maintenance, never drift: nothing here retrains.
    camera_health_enabled: bool = True
    camera_health_calibration_frames: int = Field(64, ge=2)
    camera_health_tolerance: float = Field(3.0, gt=0)
    camera_health_window_frames: int = Field(8, ge=1)
    camera_health_frozen_frames: int = Field(8, ge=2)
    camera_health_webhook_url: str = ""

    # ---- model rollout (issue 12): shadow, canary steps, gates, promotion ----
    # The default plan of POST /v1/rollouts and `sightline rollout start` (a request may override it):
    # the share of frames the candidate shadows, then the canary shares of live traffic, each stage at
    # least this many of the candidate's frames and this long; its gates' figures are read every poll.
    rollout_shadow_share: float = Field(0.25, ge=0, le=1)
    rollout_canary_steps: list[float] = [0.05, 0.25, 0.5]
    rollout_stage_min_frames: int = Field(200, ge=1)
    rollout_stage_min_duration_s: float = Field(300.0, ge=0)
    rollout_poll_interval_s: float = Field(15.0, gt=0)
    # Gate thresholds over workflows.rollout_types.GateThresholds' defaults, e.g. {"min_agreement": 0.6}.
    rollout_gate_thresholds: dict[str, float] = {}
    # Promotion waits for an ML engineer's approval (POST /v1/rollouts/{id}/approve).
    rollout_require_approval: bool = False
    # Where the signed `rollout.rolled_back` webhook goes; empty: the rollback is recorded, nothing sent.
    rollout_webhook_url: str = ""
    # A retraining run whose candidate beats production starts its rollout itself.
    retraining_auto_rollout: bool = False

    # ---- observability (issue 23): traces and metrics (infra.telemetry, README "Observability") ----
    # Where spans go: "file" (JSON lines under <data_dir>/traces, read by `sightline trace`: the local
    # stack), "otlp" (OTLP over HTTP to otlp_endpoint: Jaeger, Tempo, a collector), or "none".
    trace_exporter: Literal["file", "otlp", "none"] = "file"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # The share of batches traced (parent-based: a trace begun upstream keeps its caller's decision).
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)
    # One span file per process; past this size it is rotated once (<name>.1), so disk use stays bounded.
    trace_file_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    # Prometheus ports (0: not served): the worker's own metrics, the Temporal SDK's (its Runtime), and
    # Ray's metrics export port on the head the local stack starts (Serve's metrics and ours).
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(9464, ge=0, le=65535)
    worker_sdk_metrics_port: int = Field(9465, ge=0, le=65535)
    serving_metrics_port: int = Field(9466, ge=0, le=65535)
    # Label cardinality: this many (site, camera) pairs get their own series per process; the rest are
    # counted under camera "other". Frame and batch ids are never labels.
    metrics_max_cameras: int = Field(100, ge=1)

    def rollout_defaults(self) -> dict[str, object]:
        """The rollout plan of these settings, as plain values (workflows.rollout_types.plan_from reads them)."""
        return {"shadow_share": self.rollout_shadow_share, "canary_steps": list(self.rollout_canary_steps),
                "min_frames": self.rollout_stage_min_frames, "min_duration_s": self.rollout_stage_min_duration_s,
                "poll_interval_s": self.rollout_poll_interval_s, "thresholds": dict(self.rollout_gate_thresholds),
                "require_approval": self.rollout_require_approval, "webhook_url": self.rollout_webhook_url}

    @field_validator("rollout_canary_steps")
    @classmethod
    def _canary_steps(cls, value: list[float]) -> list[float]:
        if any(not 0 < v <= 1 for v in value) or value != sorted(value):
            raise ValueError("rollout_canary_steps must be increasing shares within (0, 1]")
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _lease_within_cap(self) -> Settings:
        if self.review_claim_lease_seconds > self.review_max_lease_seconds:
            raise ValueError("review_claim_lease_seconds must not exceed review_max_lease_seconds")
        return self

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
