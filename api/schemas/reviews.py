"""Review tasks as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ReviewTask(BaseModel):
    review_id: str = Field(description="the ReviewTaskWorkflow id")
    frame_id: str
    batch_id: str
    camera_id: str
    site_id: str
    reason: str = Field(description="low_confidence or qa_sample")
    status: str = Field(description="pending, claimed or decided")
    stage: str = Field(description="review, or adjudication after two reviewers disagreed")
    priority: int = Field(description="0 low, 1 normal, 2 high, 3 urgent; escalation raises it")
    escalated: bool
    predicted_label: str
    confidence: float
    classes: list[str]
    reviews_required: int
    decisions_count: int
    claimed_by: str | None = Field(None, description="API key id of the reviewer holding the claim")
    claimed_by_name: str | None = None
    claim_expires_at: datetime | None = None
    sla_due_at: datetime | None = None
    created_at: datetime
    decided_at: datetime | None = None
    final_label: str | None = None
    corrected: bool | None = None
    frame_url: str = Field(description="the frame's image (same API key or reviewer session)")
    temporal_ui_url: str


class ReviewList(BaseModel):
    tasks: list[ReviewTask]
    count: int


class ClaimBody(BaseModel):
    lease_seconds: float | None = Field(None, gt=0, le=24 * 3600, description="default: the configured lease")


class DecisionBody(BaseModel):
    label: str = Field(description="one of the task's classes, or 'unusable'")
    note: str | None = Field(None, max_length=2000)


class ReviewAction(BaseModel):
    """A task right after a reviewer action, as the workflow reports it."""

    review_id: str
    status: str
    stage: str
    priority: int
    escalated: bool
    claimed_by: str | None
    claim_expires_at: datetime | None
    sla_due_at: datetime | None
    decisions_count: int
    reviews_required: int
    final_label: str | None = None
    task: ReviewTask | None = Field(None, description="the task's details (on claims)")


class ReviewMetrics(BaseModel):
    window_hours: float
    pending: int
    claimed: int
    escalated: int
    oldest_pending_age_seconds: float | None
    decided: int
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None
    correction_rate: float | None
    corrected: int
    unusable: int
    decided_after_escalation: int
