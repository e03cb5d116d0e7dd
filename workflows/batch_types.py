"""Dataclasses FrameBatchWorkflow and its activities exchange. Frames travel as object keys only:
their bytes stay in the object store, so a batch's history stays small whatever the frame size."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

WORKFLOW_NAME = "FrameBatchWorkflow"

# Camera, site and idempotency keys become parts of workflow ids and object keys: keep them plain.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class BatchStatus(StrEnum):
    """A batch's life, as its Postgres row, its search attribute and the API show it."""

    RECEIVED = "received"        # accepted by the API, workflow not yet running
    RUNNING = "running"
    CLASSIFYING = "classifying"  # progress query and search attribute only; the row stays 'running'
    COMPLETED = "completed"
    FAILED = "failed"


def batch_workflow_id(camera_id: str, idempotency_key: str) -> str:
    """The same camera and idempotency key always name the same workflow, so a resubmit starts none."""
    return f"batch-{camera_id}-{idempotency_key}"


def make_frame_id(batch_id: str, position: int) -> str:
    return f"{batch_id}:{position:04d}"


@dataclass
class SubmittedFrame:
    """A frame as submitted: stored already, named by its content-addressed key. Its frame id is
    derived from the batch id and its position in the batch, so it needs no field of its own."""

    object_key: str
    size_bytes: int
    filename: str = ""
    content_type: str = ""


@dataclass
class FrameRef:
    """A recorded frame, as the steps after validation (classification, review) need it."""

    frame_id: str
    object_key: str


@dataclass
class RoutingRules:
    """Where classified frames go; a snapshot of the settings taken when the batch was submitted, so
    the rules a batch ran under are in its history."""

    review_below: float = 0.80
    qa_sample_rate: float = 0.02
    alert_at_or_above: float = 0.90
    ok_labels: list[str] = field(default_factory=lambda: ["ok"])
    reviews_required: int = 1


@dataclass
class FrameBatchInput:
    batch_id: str
    camera_id: str
    site_id: str
    frames: list[SubmittedFrame]
    chunk_size: int = 64
    webhook_url: str | None = None
    rules: RoutingRules = field(default_factory=RoutingRules)
    model_alias: str = "production"
    inference_task_queue: str = "inference"


@dataclass
class RecordBatchInput:
    batch_id: str
    camera_id: str
    site_id: str
    run_id: str
    frames: list[SubmittedFrame]


@dataclass
class ValidateFramesInput:
    """Positions [start, end) of the batch; the frames are read from Postgres, not carried here."""

    batch_id: str
    start: int
    end: int


@dataclass
class FrameOutcome:
    frame_id: str
    accepted: bool
    reason: str | None = None


@dataclass
class ValidateFramesResult:
    accepted: list[FrameRef] = field(default_factory=list)
    rejected: list[FrameOutcome] = field(default_factory=list)


@dataclass
class FrameRoute:
    frame_id: str
    route: str  # review or alert
    reason: str  # low_confidence, qa_sample or defect
    workflow_id: str | None = None


@dataclass
class CompleteBatchInput:
    batch_id: str
    status: str
    model_version: str | None = None
    routes: list[FrameRoute] = field(default_factory=list)
    rejected: list[FrameOutcome] = field(default_factory=list)


@dataclass
class FrameBatchResult:
    batch_id: str
    status: str
    frame_count: int
    accepted: int
    rejected: int
    rejections: list[FrameOutcome] = field(default_factory=list)
    model_version: str | None = None
    label_counts: dict[str, int] = field(default_factory=dict)
    sent_to_review: int = 0
    defects: int = 0


@dataclass
class BatchProgress:
    status: str
    frames_total: int
    frames_validated: int
    frames_classified: int = 0
