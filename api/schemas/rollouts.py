"""Rollouts as the API shows them; the state comes from the workflow's own contract (RolloutState)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class RolloutRequest(BaseModel):
    """Start a rollout of a registered version; anything left out comes from the settings."""

    candidate_version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    reason: str = Field("", max_length=500)
    shadow_share: float | None = Field(None, ge=0, le=1, description="0 skips the shadow stage")
    canary_steps: list[float] | None = Field(None, min_length=1, max_length=10,
                                             description="increasing shares of live traffic, each in (0, 1]")
    min_frames: int | None = Field(None, ge=1, le=10_000_000, description="the candidate's frames per stage")
    min_duration_s: float | None = Field(None, ge=0, le=30 * 86400, description="each stage at least this long")
    poll_interval_s: float | None = Field(None, gt=0, le=3600)
    thresholds: dict[str, float] | None = Field(None, max_length=20, description="gate thresholds to change")
    require_approval: bool | None = None

    def overrides(self) -> dict[str, Any]:
        values = self.model_dump(exclude={"candidate_version", "reason"})
        steps = values.get("canary_steps")
        if steps is not None and (any(not 0 < v <= 1 for v in steps) or steps != sorted(steps)):
            raise ValueError("canary_steps must be increasing shares within (0, 1]")
        return {k: v for k, v in values.items() if v is not None}


class RolloutActionRequest(BaseModel):
    reason: str = Field("", max_length=500)


class Rollout(BaseModel):
    rollout_id: str
    candidate_version: str
    status: str = Field(description="running, paused, awaiting_approval, promoted, rolled_back, aborted, failed, "
                        "skipped (the model line was held by another rollout)")
    stage: str | None = None
    previous_version: str | None = None
    split: dict[str, Any] = Field(default_factory=dict)
    gates: list[dict[str, Any]] = Field(default_factory=list)
    reason: str | None = None
    requested_by: str | None = None
    started_at: datetime | str | None = None
    finished_at: datetime | str | None = None
    state: dict[str, Any] | None = Field(None, description="the workflow's `state` query, while it answers")
    url: str
    temporal_ui_url: str


class RolloutList(BaseModel):
    rollouts: list[Rollout]
