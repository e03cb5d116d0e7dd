"""Review tasks as the API shows them: made from the workflow's own contracts (ReviewTaskInput for what
the task is about, ReviewTaskView for its state), not declared a second time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.contracts import model_of
from workflows.review_types import MAX_REVIEW_BOXES, ReviewTaskInput, ReviewTaskView

# The views carry workflow time as ISO strings; the API parses them, so clients get one time format.
_TIMES: dict[str, Any] = {name: datetime | None for name in ("claim_expires_at", "sla_due_at", "decided_at")}
_TIMES["created_at"] = datetime

_DESCRIPTIONS = {
    "review_id": "the ReviewTaskWorkflow id",
    "reason": "low_confidence or qa_sample",
    "status": "pending, claimed or decided",
    "stage": "review, or adjudication after two reviewers disagreed",
    "priority": "0 low, 1 normal, 2 high, 3 urgent; escalation raises it",
    "claimed_by": "API key id of the reviewer holding the claim",
    "decisions_count": "decisions given so far (two are needed when reviews_required is 2)",
    "model_version": "the model version whose prediction sent the frame to review",
    "boxes": "a detection task: the model's boxes (relative corners 0..1, class, score); null: classification",
    "final_boxes": "a detection task's decided box set",
}

# Internal to the workflow: per-task overrides of the policy. The frame is reached through frame_url,
# never by its object key.
_INTERNAL = ("sla_seconds", "claim_lease_seconds", "escalation_webhook_url", "object_key")

ReviewTask = model_of(
    "ReviewTask", (ReviewTaskInput, ReviewTaskView), exclude=_INTERNAL, types=_TIMES, descriptions=_DESCRIPTIONS,
    extra={
        "corrected": (bool | None, Field(None, description="the final label is another class than predicted")),
        "frame_url": (str, Field(description="the frame's image (same API key or reviewer session)")),
        "temporal_ui_url": (str, Field(description="the task's workflow history in the Temporal Web UI")),
    },
    doc="A review task in the queue: what it is about and where it stands.",
)

ReviewAction = model_of(
    "ReviewAction", (ReviewTaskView,), types=_TIMES, descriptions=_DESCRIPTIONS,
    extra={"task": (ReviewTask | None, Field(None, description="the task's details (on claims)"))},
    doc="A task right after a reviewer action, as the workflow reports it.",
)


class ReviewList(BaseModel):
    tasks: list[ReviewTask]  # type: ignore[valid-type]  # a model made from the contracts at import time
    count: int


class ClaimBody(BaseModel):
    lease_seconds: float | None = Field(None, gt=0, le=24 * 3600, description="default: the configured lease")


class DecisionBody(BaseModel):
    label: str = Field("", description="one of the task's classes, or 'unusable'; a detection task's label comes"
                                       " from its boxes (the largest box's class, 'ok' when none)")
    note: str | None = Field(None, max_length=2000)
    # Checked by vision.boxes (not pydantic), so a bad box answers 422 naming `boxes[1].x1`.
    boxes: list[Any] | None = Field(None, max_length=MAX_REVIEW_BOXES, description=(
        "a detection task's box set: [{x0, y0, x1, y1, label}] in corners relative to the frame (0..1);"
        " [] = no defect"))


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
