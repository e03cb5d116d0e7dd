"""Dataclasses FrameBatchWorkflow and its activities exchange. Frames travel as object keys only:
their bytes stay in the object store, so a batch's history stays small whatever the frame size."""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_QUEUE = "orchestration"


def batch_workflow_id(camera_id: str, idempotency_key: str) -> str:
    """The same camera and idempotency key always name the same workflow, so a resubmit starts none."""
    return f"batch-{camera_id}-{idempotency_key}"


@dataclass
class FrameRef:
    frame_id: str
    position: int
    object_key: str
    sha256: str
    size_bytes: int
    filename: str = ""
    content_type: str = ""


@dataclass
class FrameBatchInput:
    batch_id: str
    camera_id: str
    site_id: str
    frames: list[FrameRef]
    chunk_size: int = 64
    webhook_url: str | None = None


@dataclass
class RecordBatchInput:
    batch_id: str
    camera_id: str
    site_id: str
    run_id: str
    frames: list[FrameRef]


@dataclass
class ValidateFramesInput:
    batch_id: str
    frames: list[FrameRef]


@dataclass
class FrameOutcome:
    frame_id: str
    accepted: bool
    reason: str | None = None


@dataclass
class ValidateFramesResult:
    outcomes: list[FrameOutcome] = field(default_factory=list)


@dataclass
class CompleteBatchInput:
    batch_id: str
    status: str


@dataclass
class FrameBatchResult:
    batch_id: str
    status: str
    frame_count: int
    accepted: int
    rejected: int
    rejections: list[FrameOutcome] = field(default_factory=list)


@dataclass
class BatchProgress:
    status: str
    frames_total: int
    frames_validated: int
