"""Dataclasses FrameBatchWorkflow and its activities exchange. Frames travel as object keys only:
their bytes stay in the object store, so a batch's history stays small whatever the frame size."""

from dataclasses import dataclass, field
from enum import StrEnum

WORKFLOW_NAME = "FrameBatchWorkflow"

# Camera and site ids and idempotency keys become parts of workflow, frame and review ids: plain
# characters only, and short enough that the longest frame id a batch can have fits everywhere it goes
# (serving's request schema allows MAX_FRAME_ID; a test holds the two together).
MAX_NAME, MAX_KEY = 64, 128
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}$"  # camera and site ids
KEY_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_KEY - 1}}}$"  # idempotency keys
# What classifies a batch that names no model: the production alias. A batch may name another alias or a
# version (POST /v1/batches `model`); only production's frames follow the live traffic split (canary, shadow).
DEFAULT_MODEL = "production"
MAX_MODEL = 64  # serving's request schema allows this much (serving.schema.ClassifyRequest.model)
MODEL_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_MODEL - 1}}}$"
# ':' is outside both alphabets, so the parts of an id are always recoverable: two different
# (site, camera, key) triples can never name one batch.
SEPARATOR = ":"


class BatchStatus(StrEnum):
    """A batch's life, as its Postgres row, its search attribute and the API show it."""

    RECEIVED = "received"        # accepted by the API, workflow not yet running
    RUNNING = "running"
    CLASSIFYING = "classifying"  # progress query and search attribute only; the row stays 'running'
    COMPLETED = "completed"
    FAILED = "failed"


def batch_workflow_id(site_id: str, camera_id: str, idempotency_key: str) -> str:
    """`batch:<site>:<camera>:<key>`. The same site, camera and idempotency key always name the same
    workflow, so a resubmission starts none, and two sites can never name one batch (whatever their
    camera ids and keys); camera-stream batches have a namespace of their own (`stream:`), which no
    submission can reach."""
    return SEPARATOR.join(("batch", site_id, camera_id, idempotency_key))


def legacy_batch_workflow_id(camera_id: str, idempotency_key: str) -> str:
    """`batch:<camera>:<key>`: the ids batches had before the site was part of them. Three parts where
    today's have four, so the two never collide; a resubmission of such a batch by its own site is
    still answered with it (api.services.batches)."""
    return SEPARATOR.join(("batch", camera_id, idempotency_key))


def make_frame_id(batch_id: str, position: int) -> str:
    return f"{batch_id}{SEPARATOR}{position:04d}"


# The longest frame id: a batch id of the longest camera id and key, and a position.
MAX_FRAME_ID = len(make_frame_id(batch_workflow_id("s" * MAX_NAME, "c" * MAX_NAME, "k" * MAX_KEY), 9999))


@dataclass
class SubmittedFrame:
    """A frame as submitted: stored already, named by its content-addressed key. Its frame id is
    derived from the batch id and its position in the batch, so it needs no field of its own."""

    object_key: str
    size_bytes: int
    filename: str = ""
    content_type: str = ""


@dataclass
class RoutingRules:
    """Where classified frames go; a snapshot of the settings taken when the batch was submitted, so
    the rules a batch ran under are in its history."""

    review_below: float = 0.80
    qa_sample_rate: float = 0.02
    alert_at_or_above: float = 0.90
    ok_labels: list[str] = field(default_factory=lambda: ["ok"])
    reviews_required: int = 1
    # A detection version's boxes (workflows.routing.routes_for_boxes): a box scoring below this is
    # background, not a defect anyone needs to look at; from it up to review_below, a question for review.
    box_review_at_or_above: float = 0.30


@dataclass
class ReviewOpening:
    """The review policy a batch opens its tasks with (the settings when it was submitted), passed into
    each task so that it opens without reading them."""

    sla_seconds: dict[str, float]  # by priority name: low, normal, high, urgent
    claim_lease_seconds: float
    escalation_webhook_url: str = ""  # empty: escalations are recorded, not sent


@dataclass
class FrameBatchInput:
    batch_id: str
    camera_id: str
    site_id: str
    # Frames the batch must record itself (a camera stream's); empty when the API recorded them before
    # starting the batch, which keeps the frame list out of the history.
    frames: list[SubmittedFrame] = field(default_factory=list)
    chunk_size: int = 256  # frames per classification activity; serving batches across them anyway
    webhook_url: str | None = None
    rules: RoutingRules = field(default_factory=RoutingRules)
    model_alias: str = "production"
    inference_task_queue: str = "inference"
    frame_count: int = 0  # frames the API recorded; 0 when `frames` are given
    # Always True: every batch runs the durable path (the steps before it, and their code, are gone, and
    # no run of them is open). Kept because stored inputs hold it (tests/test_history_fields.py).
    durable_path: bool = True
    # 0: classification returns what it routed and the workflow opens review tasks and the alert as
    # children and closes the batch. 1: a batch of one chunk is classified, routed, opened (review tasks,
    # alert) and closed by its one activity, a retry acting on what the first attempt recorded; the
    # workflow only waits for it (batches of several chunks keep the steps of 0). Decided by the input
    # in the history: a batch begun on steps 0 replays and finishes on them.
    steps_version: int = 0
    reviews: ReviewOpening | None = None

    @property
    def total_frames(self) -> int:
        return self.frame_count or len(self.frames)


@dataclass
class RecordFramesInput:
    """A camera stream's batch: its frames, recorded by the batch itself (the API records its own)."""

    batch_id: str
    camera_id: str
    site_id: str
    frames: list[SubmittedFrame]


@dataclass
class ClassifyBatchInput:
    """Positions [start, end) of a recorded batch: classify them, record what came out, apply the
    rules. Frames are read from Postgres by position, never carried here."""

    batch_id: str
    camera_id: str
    site_id: str
    start: int
    end: int
    rules: RoutingRules
    model_alias: str = "production"
    # Set (FrameBatchInput steps 1, a batch of one chunk): the activity also opens the frames' review
    # tasks (on `review_task_queue`, with this policy) and the batch's alert, and closes the batch.
    close: bool = False
    webhook_url: str | None = None
    reviews: ReviewOpening | None = None
    review_task_queue: str = ""


@dataclass
class RoutedFrame:
    """A classified frame that goes somewhere: to human review, or into the batch's defect alert."""

    frame_id: str
    object_key: str
    route: str  # review or alert
    reason: str  # low_confidence, qa_sample or unfamiliar (review); defect (alert)
    label: str
    confidence: float
    workflow_id: str | None = None  # the review task or alert delivery started for it
    # The version that answered this frame (a canary's frames are the candidate's, not production's);
    # None in batches classified before frames carried it: the batch's model_version answered them.
    model_version: str | None = None
    # A detection version's boxes in the frame (vision.boxes.Box.as_dict()), for the review task to
    # draw and the alert to carry; None from a classifier.
    boxes: list[dict] | None = None


@dataclass
class ClassifiedFrames:
    """What classifying a range of positions found. Predictions and rejections are in Postgres; only
    totals and the frames that go somewhere come back, so a batch's history stays small."""

    model_version: str | None  # production's, as serving reported it
    classes: list[str]
    classified: int
    rejected: int
    unfamiliar: int
    label_counts: dict[str, int]
    routed: list[RoutedFrame]
    version_counts: dict[str, int] = field(default_factory=dict)  # frames answered, by version
    # A batch closed by its activity (ClassifyBatchInput.close) gets counts instead of `routed`: the frames
    # went where they go already, and a routed list is what the workflow's converter spent most on decoding.
    sent_to_review: int = 0
    defects: int = 0


@dataclass
class CloseBatchInput:
    batch_id: str
    status: str
    model_version: str | None
    routes: list[RoutedFrame] = field(default_factory=list)
    failure: str | None = None  # why the batch failed, for status 'failed'


@dataclass
class FrameOutcome:
    frame_id: str
    accepted: bool
    reason: str | None = None


@dataclass
class FrameBatchResult:
    batch_id: str
    status: str
    frame_count: int
    accepted: int
    rejected: int
    # Always empty: rejections are in Postgres. Kept because stored results hold it.
    rejections: list[FrameOutcome] = field(default_factory=list)
    model_version: str | None = None
    label_counts: dict[str, int] = field(default_factory=dict)
    sent_to_review: int = 0
    defects: int = 0
    unfamiliar: int = 0
    version_counts: dict[str, int] = field(default_factory=dict)  # frames answered, by model version


@dataclass
class BatchProgress:
    status: str
    frames_total: int
    frames_validated: int
    frames_classified: int = 0
