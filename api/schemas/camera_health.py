"""Bodies of the camera health routes: a camera's state against its calibrated range, and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from workflows.batch_types import NAME_PATTERN

HealthState = Literal["calibrating", "healthy", "degraded"]


class MetricRange(BaseModel):
    low: float
    high: float
    recent: float | None = Field(None, description="the average of the camera's last few frames")


class CameraHealth(BaseModel):
    """Maintenance, not model drift: a degraded camera needs its lens cleaned or its light fixed."""

    state: HealthState
    reasons: list[str] = Field(description="blurred, dark, saturated, low_contrast, noisy, frozen")
    since: datetime = Field(description="when the camera entered this state")
    calibrated_at: datetime | None = None
    calibration_frames: int = Field(description="frames calibrated on so far")
    calibration_target: int
    repeated_frames: int = Field(description="frames in a row with the same bytes (frozen past a threshold)")
    evaluated_at: datetime | None = None
    ranges: dict[str, MetricRange] = Field(default_factory=dict,
                                           description="brightness, rel_contrast, rel_sharpness")


class CameraHealthEvent(BaseModel):
    seq: int
    from_state: str
    to_state: str
    reasons: list[str]
    event: str | None = Field(None, description="the webhook it sent: camera.degraded or camera.recovered")
    batch_id: str | None = None
    actor: str | None = Field(None, description="the key that recalibrated")
    webhook_workflow_ids: list[str] = []
    at: datetime


class CameraHealthDetail(BaseModel):
    camera_id: str
    site_id: str
    health: CameraHealth
    events: list[CameraHealthEvent]


class RecalibrateRequest(BaseModel):
    site_id: str = Field(pattern=NAME_PATTERN, examples=["plant-a"])
    reason: str = Field("", max_length=500, examples=["lens cleaned"])
