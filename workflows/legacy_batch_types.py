"""Contracts of the steps FrameBatchWorkflow took before the durable path (record, validate, classify,
record predictions, complete). Kept for batches started on that code: they replay and finish on it.
Remove with the legacy branch (workflows/frame_batch_legacy.py)."""

from dataclasses import dataclass, field

from workflows.batch_types import FrameOutcome, SubmittedFrame


@dataclass
class FrameRef:
    """A recorded frame, as the steps after validation (classification, review) need it."""

    frame_id: str
    object_key: str


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
class ClassifyFramesInput:
    batch_id: str
    frames: list[FrameRef]
    model_alias: str = "production"  # an alias (production, candidate, shadow) or a version name


@dataclass
class FramePrediction:
    frame_id: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    quality: dict[str, float]
    model_version: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ClassifyFramesResult:
    model_version: str
    predictions: list[FramePrediction]
    rejections: list[FrameOutcome]  # frames the preprocessor rejected, accepted=False with the reason


@dataclass
class RecordPredictionsInput:
    batch_id: str
    predictions: list[FramePrediction]
