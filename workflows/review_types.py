"""Dataclasses ReviewTaskWorkflow, its activities and the API exchange, and the pure rules they share
(workflow ids, priority levels, who may claim or decide). Frames travel as object keys only."""

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

WORKFLOW_NAME = "ReviewTaskWorkflow"
UNUSABLE = "unusable"
REASONS = ("low_confidence", "qa_sample", "unfamiliar")

# Priority levels, lowest first; the SLA per level comes from settings (review_sla_seconds).
PRIORITIES = ("low", "normal", "high", "urgent")
MAX_PRIORITY = len(PRIORITIES) - 1
# The longest claim the workflow grants, whoever asks: the API caps leases lower (review_max_lease_seconds,
# 30 minutes by default); this holds even for a caller that goes around the API.
MAX_CLAIM_LEASE_SECONDS = 4 * 3600.0



class ReviewStatus(StrEnum):
    """A task's state (the projection's `status`). SLA expiry does not change it: it sets `escalated`
    and raises the priority, and the task stays claimable until decided."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DECIDED = "decided"


class ReviewStage(StrEnum):
    """A task that needs two independent reviews goes to adjudication when they disagree."""

    REVIEW = "review"
    ADJUDICATION = "adjudication"


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def review_workflow_id(frame_id: str, reason: str) -> str:
    """`review-<frame>-<reason>`: the same frame and reason always name the same task, so a retried
    start opens no second one. Characters that are awkward in URLs and Temporal UI links (frame ids hold
    ':' or '/') become '.', and then a short digest of the raw frame id keeps distinct frames distinct."""
    if reason not in REASONS:
        raise ValueError(f"unknown review reason {reason!r}: use one of {', '.join(REASONS)}")
    safe = _SAFE.sub(".", frame_id).strip(".") or "frame"
    if safe != frame_id:
        safe = f"{safe}.{hashlib.sha256(frame_id.encode()).hexdigest()[:8]}"
    return f"review-{safe}-{reason}"


def priority_level(priority: int | str) -> int:
    """0 (low) .. 3 (urgent) from an int or a name; unknown names are 'normal'."""
    if isinstance(priority, str):
        if priority.isdigit():
            priority = int(priority)
        else:
            return PRIORITIES.index(priority) if priority in PRIORITIES else 1
    return max(0, min(MAX_PRIORITY, int(priority)))


def priority_name(level: int) -> str:
    return PRIORITIES[max(0, min(MAX_PRIORITY, level))]


def is_correction(label: str, predicted_label: str) -> bool:
    """A reviewer corrected the model when they chose another class; 'unusable' is not a correction."""
    return label != UNUSABLE and label != predicted_label


@dataclass
class ReviewTaskInput:
    frame_id: str
    batch_id: str
    object_key: str
    camera_id: str
    site_id: str
    reason: str                      # 'low_confidence' or 'qa_sample'
    predicted_label: str
    confidence: float
    classes: list[str]
    priority: int | str = "normal"  # 0..3 or low/normal/high/urgent
    reviews_required: int = 1       # 2: two independent decisions, a third on disagreement
    model_version: str | None = None
    # Overrides for tests and special queues; None takes the policy from settings at start.
    sla_seconds: float | None = None
    claim_lease_seconds: float | None = None
    escalation_webhook_url: str | None = None
    # Which steps the task takes, set by start_review_task (REVIEW_STEPS). A task started before has no
    # such field in its input, so it decodes as 0 and replays and goes on with the steps it began with:
    # the branch is decided by the input in the history, which costs no marker event the way
    # workflow.patched() would.
    steps_version: int = 0


# 0: the task upserts its search attributes, and writes Postgres through regular activities.
# 1: its attributes are given at start, and it writes through local activities (one workflow task to open).
REVIEW_STEPS = 1
# 2: opened by its batch's classification (activities.inference), which passes the review policy in and
#    writes the task's first projection row (version 1) with the batch's own records: the task opens in
#    one workflow task with no activity at all, and its first write is its first reviewer's action.
OPENED_BY_BATCH = 2


def review_sla_seconds(slas: dict[str, float], priority: int | str) -> float:
    """The SLA of a priority from the policy's table (settings.review_sla_seconds): its own, else normal's."""
    return float(slas.get(priority_name(priority_level(priority))) or slas.get("normal") or 4 * 3600.0)


@dataclass
class ReviewPolicyInput:
    priority: int


@dataclass
class ReviewPolicy:
    sla_seconds: float
    claim_lease_seconds: float
    escalation_webhook_url: str = ""  # empty: escalations are recorded, not sent


@dataclass
class ClaimRequest:
    reviewer_id: str                # the API key id of the authenticated caller
    reviewer_name: str = ""
    lease_seconds: float | None = None  # None: the task's lease from settings


@dataclass
class DecisionRequest:
    reviewer_id: str
    label: str
    reviewer_name: str = ""
    note: str | None = None


@dataclass
class ReleaseRequest:
    reviewer_id: str


@dataclass
class Decision:
    reviewer_id: str
    reviewer_name: str
    label: str
    note: str | None
    decided_at: str                 # ISO 8601, workflow time
    stage: str                      # review or adjudication


@dataclass
class ReviewTaskView:
    """The task as the workflow sees it; what updates return and the `state` query answers."""

    review_id: str
    status: str
    stage: str
    priority: int
    escalated: bool
    claimed_by: str | None
    claimed_by_name: str | None
    claim_expires_at: str | None
    sla_due_at: str | None
    created_at: str
    reviews_required: int
    decisions_count: int
    final_label: str | None = None
    decided_at: str | None = None


def opening_view(review_id: str, input: ReviewTaskInput, created_at: datetime) -> ReviewTaskView:
    """The state of a task just opened, as its first projection row shows it: pending, unclaimed, its SLA
    running from `created_at` (the input must carry its policy)."""
    assert input.sla_seconds is not None
    return ReviewTaskView(
        review_id=review_id, status=ReviewStatus.PENDING, stage=ReviewStage.REVIEW,
        priority=priority_level(input.priority), escalated=False, claimed_by=None, claimed_by_name=None,
        claim_expires_at=None, sla_due_at=(created_at + timedelta(seconds=input.sla_seconds)).isoformat(),
        created_at=created_at.isoformat(), reviews_required=2 if input.reviews_required >= 2 else 1,
        decisions_count=0)


@dataclass
class ProjectionUpdate:
    """One full row of the review listing: the task as it was opened and its state now. `version` only
    grows, so a late or retried write of an older state never wins."""

    version: int
    run_id: str
    task: ReviewTaskInput
    view: ReviewTaskView
    escalated_at: str | None = None
    decided_by: list[str] = field(default_factory=list)


@dataclass
class RecordLabelInput:
    review_id: str
    frame_id: str
    batch_id: str
    object_key: str
    predicted_label: str
    confidence: float
    model_version: str | None
    decision: Decision


@dataclass
class EscalationInput:
    review_id: str
    frame_id: str
    batch_id: str
    camera_id: str
    site_id: str
    reason: str
    priority_before: int
    priority_after: int
    sla_due_at: str
    escalated_at: str
    webhook_workflow_id: str | None = None  # the escalation webhook's delivery workflow, when one was sent


@dataclass
class ReviewTaskResult:
    review_id: str
    final_label: str
    corrected: bool
    escalated: bool
    decisions: list[Decision]
