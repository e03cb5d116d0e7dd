"""Retraining runs as the API shows them; the request and the progress come from the workflow's own
contracts (TrainingParams, RetrainingProgress)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.contracts import model_of
from workflows.retraining_types import RetrainingProgress, TrainingParams, TrainingProgress


class RetrainingRequest(BaseModel):
    """What an ML engineer asks for: why, and any training parameter to change from the defaults."""

    note: str = Field(min_length=1, max_length=500, description="why this run: recorded on the model card")
    profile: str | None = Field(None, pattern="^(standard|tiny|micro)$", description="the base generated set")
    epochs: int | None = Field(None, ge=1, le=100)
    learning_rate: float | None = Field(None, gt=0, le=1)
    batch_size: int | None = Field(None, ge=4, le=1024)
    reviewed_share: float | None = Field(None, ge=0, lt=1, description="share of each batch from reviewed frames")
    reviewed_holdout_pct: int | None = Field(None, ge=0, le=50)
    init_from_parent: bool | None = Field(None, description="fine-tune production's weights")
    seed: int | None = Field(None, ge=0)
    novelty_percentile: float | None = Field(None, gt=50, lt=100)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"note"}).items() if v is not None}


class RetrainingTriggered(BaseModel):
    workflow_id: str
    snapshot_id: str
    reviewed_frames: int = Field(description="reviewed labels in the snapshot")
    started: bool = Field(description="false: a run for this snapshot exists already and nothing was started")
    url: str
    temporal_ui_url: str


Parameters = model_of("Parameters", (TrainingParams,), doc="The training parameters of a run.")
TrainingState = model_of("TrainingState", (TrainingProgress,), exclude=("checkpoint_key",),
                         doc="Training's latest progress: epoch, step, loss, and an ETA in seconds.")
Progress = model_of("Progress", (RetrainingProgress,), exclude=("training",),
                    extra={"training": (TrainingState, Field(description="training's progress"))},
                    doc="The run's `progress` query.")


class RetrainingRun(BaseModel):
    workflow_id: str
    snapshot_id: str
    status: str = Field(description="running, completed, failed or cancelled (the workflow's, when it answers)")
    phase: str | None = None
    trigger_kind: str | None = None
    drift_report_id: str | None = None
    requested_by: str | None = None
    note: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    production_version: str | None = None
    candidate_version: str | None = None
    outcome: str | None = Field(None, description="candidate (handed to rollout) or rejected")
    outcome_reason: str | None = None
    evaluation: dict[str, Any] = Field(default_factory=dict)
    epochs_run: int | None = None
    resumed_from_epoch: int | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None  # type: ignore[valid-type]  # made from the contracts at import time
    url: str
    temporal_ui_url: str


class RetrainingList(BaseModel):
    runs: list[RetrainingRun]
