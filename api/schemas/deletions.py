"""Deletion requests, retention periods and model retirement as the API takes and shows them (issue 24)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from workflows.batch_types import KEY_PATTERN, NAME_PATTERN

BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,300}$"


class DeletionRequest(BaseModel):
    """What to delete: a camera, a site, a time range, a list of batches, or any of them together (each
    narrows the others). Everything of the frames in scope goes: their objects, rows, predictions, review
    tasks, signed URLs, drift report samples; snapshots and model cards record it."""

    site_id: str | None = Field(None, pattern=NAME_PATTERN)
    camera_id: str | None = Field(None, pattern=NAME_PATTERN)
    created_from: datetime | None = Field(None, description="frames recorded at or after this time")
    created_until: datetime | None = Field(None, description="frames recorded before this time")
    batch_ids: list[str] = Field(default_factory=list, max_length=1000)
    force: bool = Field(False, description="also when a model in rollout was trained on these frames: the "
                                           "rollout is aborted first")
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _some_scope(self) -> DeletionRequest:
        import re

        bad = [b for b in self.batch_ids if not re.match(BATCH_ID_PATTERN, b)]
        if bad:
            raise ValueError(f"batch_ids: {bad[0]!r} is not a batch id")
        if not (self.site_id or self.camera_id or self.batch_ids or self.created_from or self.created_until):
            raise ValueError("name what to delete: site_id, camera_id, created_from/created_until or batch_ids")
        if self.created_from and self.created_until and self.created_until <= self.created_from:
            raise ValueError("created_until must be after created_from: the range is empty")
        return self


class Deletion(BaseModel):
    deletion_id: str
    url: str
    status: str
    scope: dict[str, Any]
    force: bool = False
    reason: str = ""
    frames_total: int = 0
    frames_deleted: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    aborted_rollouts: list[str] = Field(default_factory=list)
    verified: bool | None = None
    verification: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = ""
    created_at: datetime | None = None
    finished_at: datetime | None = None
    temporal_ui_url: str | None = None


class RetentionPeriods(BaseModel):
    """Days each kind of record is kept at a site; null: the settings' default; 0: kept for ever."""

    frames_days: int | None = Field(None, ge=0, le=36500)
    predictions_days: int | None = Field(None, ge=0, le=36500)
    review_tasks_days: int | None = Field(None, ge=0, le=36500)
    drift_reports_days: int | None = Field(None, ge=0, le=36500)


class SiteRetention(BaseModel):
    site_id: str
    overrides: RetentionPeriods
    effective: dict[str, int] = Field(description="the periods that apply (override, else default), in days")
    updated_by: str = ""
    updated_at: datetime | None = None


class RetireRequest(BaseModel):
    reason: str = Field("", max_length=500)


class Retirement(BaseModel):
    version: str
    retired_by: str
    reason: str
    retired_at: datetime


__all__ = ["KEY_PATTERN", "Deletion", "DeletionRequest", "RetentionPeriods", "RetireRequest", "Retirement",
           "SiteRetention"]
