"""Who may call which route, declared once: routes take one of these as a parameter, and the
reviewer page signs in with REVIEWERS. Admin passes every check (api.auth.allowed_roles)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.auth import Principal, require_roles, require_roles_or_session
from workflows.rollout_types import ROLLOUT_DRIVERS, ROLLOUT_STOPPERS

# Backend teams submit batches and camera frames.
INGESTERS = ("ingest",)
# Batches and their predictions: the teams that submit them, ML engineers, ops.
BATCH_READERS = ("ingest", "ml-engineer", "ops")
# A single frame and its image: the above, and reviewers, who look at frames all day.
FRAME_READERS = ("ingest", "reviewer", "ml-engineer", "ops")
# Review tasks: reviewers, and ML engineers who review too.
REVIEWERS = ("reviewer", "ml-engineer")
# Ops watch the review queue's health; they do not review.
REVIEW_WATCHERS = (*REVIEWERS, "ops")
# Prometheus scrapes /metrics with an ops key (`authorization: {credentials: sl_...}` in its config).
METRICS_READERS = ("ops",)
# Drift checks (start one, read the reports), model versions and their cards, retraining runs: ML
# engineers and ops; only ML engineers trigger or cancel retraining.
DRIFT_CHECKERS = ("ml-engineer", "ops")
MODEL_READERS = ("ml-engineer", "ops")
RETRAINING_READERS = ("ml-engineer", "ops")
RETRAINERS = ("ml-engineer",)
# Rollouts: ML engineers start, approve and resume them; ops may also stop one (pause, abort, roll back).
# The driver and stopper roles are the rollout workflow's own, which its updates check again.
ROLLOUT_READERS = ("ml-engineer", "ops")
# Privacy settings: ops (and admin) change them; ingest keys read a camera's too (the edge agent redacts
# with them before a frame leaves the site).
PRIVACY_MANAGERS = ("ops",)
PRIVACY_READERS = ("ingest", "ops")
# Camera health is maintenance: ops recalibrate a camera after its lens was cleaned or it was moved.
CAMERA_MAINTAINERS = ("ops",)
# Dataset exchange (COCO / YOLO export, COCO import as reviewed labels): ML engineers.
DATASET_EXCHANGERS = ("ml-engineer",)

IngestCaller = Annotated[Principal, Depends(require_roles(*INGESTERS))]
BatchReader = Annotated[Principal, Depends(require_roles(*BATCH_READERS))]
FrameReader = Annotated[Principal, Depends(require_roles(*FRAME_READERS))]
Reviewer = Annotated[Principal, Depends(require_roles(*REVIEWERS))]
# The frame under review, which the reviewer page loads with its session cookie (the only /v1 route that
# takes the cookie; it only reads).
ReviewerOrSession = Annotated[Principal, Depends(require_roles_or_session(*REVIEWERS))]
ReviewWatcher = Annotated[Principal, Depends(require_roles(*REVIEW_WATCHERS))]
MetricsReader = Annotated[Principal, Depends(require_roles(*METRICS_READERS))]
DriftChecker = Annotated[Principal, Depends(require_roles(*DRIFT_CHECKERS))]
ModelReader = Annotated[Principal, Depends(require_roles(*MODEL_READERS))]
RetrainingReader = Annotated[Principal, Depends(require_roles(*RETRAINING_READERS))]
Retrainer = Annotated[Principal, Depends(require_roles(*RETRAINERS))]
RolloutReader = Annotated[Principal, Depends(require_roles(*ROLLOUT_READERS))]
RolloutDriver = Annotated[Principal, Depends(require_roles(*ROLLOUT_DRIVERS))]
RolloutStopper = Annotated[Principal, Depends(require_roles(*ROLLOUT_STOPPERS))]
PrivacyManager = Annotated[Principal, Depends(require_roles(*PRIVACY_MANAGERS))]
PrivacyReader = Annotated[Principal, Depends(require_roles(*PRIVACY_READERS))]
CameraMaintainer = Annotated[Principal, Depends(require_roles(*CAMERA_MAINTAINERS))]
DatasetExchanger = Annotated[Principal, Depends(require_roles(*DATASET_EXCHANGERS))]
