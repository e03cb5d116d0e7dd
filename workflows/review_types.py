"""Dataclasses ReviewTaskWorkflow, its activities and the API exchange, and the pure rules they share
(workflow ids, priority levels, who may claim or decide). Frames travel as object keys only."""

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vision.boxes import Box, BoxError, agree, boxes_from

WORKFLOW_NAME = "ReviewTaskWorkflow"
UNUSABLE = "unusable"
REASONS = ("low_confidence", "qa_sample", "unfamiliar")

# Priority levels, lowest first; the SLA per level comes from settings (review_sla_seconds).
PRIORITIES = ("low", "normal", "high", "urgent")
MAX_PRIORITY = len(PRIORITIES) - 1
# The longest claim the workflow grants, whoever asks: the API caps leases lower (review_max_lease_seconds,
# 30 minutes by default); this holds even for a caller that goes around the API.
MAX_CLAIM_LEASE_SECONDS = 4 * 3600.0
# A detection task (one whose input carries the model's boxes) is decided with a box set; the frame's own
# label is then derived from it: the largest box's class, or this one when the reviewer left no box.
NO_DEFECT = "ok"
# Two reviewers' box sets agree when every box of each is matched, same class, at least at this IoU.
BOX_AGREEMENT_IOU = 0.5
# The most boxes one decision may carry (the generated camera draws one defect a frame).
MAX_REVIEW_BOXES = 50


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


def checked_boxes(items: object, classes: list[str]) -> list[dict[str, Any]]:
    """A reviewer's box set, checked (vision.boxes: inside the frame, positive size, a class named) and
    each class one of the task's: the canonical dicts, or BoxError naming the field (`boxes[1].x1`)."""
    if not isinstance(items, list):
        raise BoxError("boxes", "a list of boxes is required")
    if len(items) > MAX_REVIEW_BOXES:
        raise BoxError("boxes", f"at most {MAX_REVIEW_BOXES} boxes")
    boxes = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise BoxError(f"boxes[{n}]", "a box is an object with x0, y0, x1, y1 and label")
        try:  # a reviewer's box has no score: one sent along is dropped, never read
            boxes.append(Box.from_dict({k: v for k, v in item.items() if k != "score"}, f"boxes[{n}]"))
        except OverflowError:
            raise BoxError(f"boxes[{n}]", "corners must be numbers from 0 to 1") from None
    allowed = [c for c in classes if c != NO_DEFECT]
    for n, box in enumerate(boxes):
        if box.label not in allowed:
            raise BoxError(f"boxes[{n}].label",
                           f"{box.label!r} is not one of the task's classes ({', '.join(allowed)})")
    # A reviewer's box has no score: it is ground truth.
    return [{k: v for k, v in b.as_dict().items() if k != "score"} for b in boxes]


def box_decision_label(boxes: list[dict[str, Any]]) -> str:
    """The frame's label of a box decision: the largest box's class (the first of equals), else NO_DEFECT."""
    best = max(boxes, key=lambda b: (b["x1"] - b["x0"]) * (b["y1"] - b["y0"]), default=None)
    return str(best["label"]) if best is not None else NO_DEFECT


def decisions_agree(decisions: list["Decision"]) -> bool:
    """Consensus: class decisions agree when they name the same class; box decisions when every box set
    matches the first one to one, same class, by IoU (vision.boxes.agree at BOX_AGREEMENT_IOU); an
    unusable frame agrees only with unusable."""
    sets = [d.boxes for d in decisions]
    if all(s is None for s in sets):
        return len({d.label for d in decisions}) == 1
    if any(s is None for s in sets):
        return False
    first = boxes_from(sets[0] or [])
    return all(agree(first, boxes_from(s or []), BOX_AGREEMENT_IOU) for s in sets[1:])


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
    # A detection task: the model's boxes on the frame (vision.boxes.Box.as_dict(), relative corners),
    # [] when it found none. None (every task before detection, every classification task): the task is
    # decided with a class, as it always was; the box rules below never run for it, so its histories replay.
    boxes: list[dict[str, Any]] | None = None


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
    # A detection task's decision: the reviewer's box set (may be empty: no defect); `label` is then
    # ignored unless it is 'unusable' (box_decision_label derives it).
    boxes: list[dict[str, Any]] | None = None


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
    boxes: list[dict[str, Any]] | None = None  # a detection task's box set (None: a class decision, or unusable)


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
    final_boxes: list[dict[str, Any]] | None = None  # a detection task's decided box set


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
    final_boxes: list[dict[str, Any]] | None = None
