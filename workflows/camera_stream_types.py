"""Dataclasses of CameraStreamWorkflow: the frames a live camera signals, and the stream's own state,
which travels through continue-as-new in its input."""

from dataclasses import dataclass, field

from workflows.batch_types import SEPARATOR, FrameBatchInput

WORKFLOW_NAME = "CameraStreamWorkflow"
FRAME_SIGNAL = "frame"
CLOSE_SIGNAL = "close"
STATUS_QUERY = "status"


def camera_workflow_id(site_id: str, camera_id: str) -> str:
    """`camera:<site>:<camera>`: one stream per camera of a site, so two sites with a camera of the
    same name never feed one stream (':' is outside the id alphabets: the parts are recoverable)."""
    return SEPARATOR.join(("camera", site_id, camera_id))


def legacy_camera_workflow_id(camera_id: str) -> str:
    """`camera-<camera>`: the streams' ids before the site was part of them. A stream still running
    under one takes no new frames (the API sends them to today's id) and is closed by the API once it
    sees that camera again (api.services.cameras), finishing the batches it holds under its old ids."""
    return f"camera-{camera_id}"


def stream_batch_id(site_id: str, camera_id: str, epoch: str, seq: int) -> str:
    """The child batch's workflow id, `stream:<site>:<camera>:<epoch>:<seq>`: a namespace of the streams'
    own, so no submission through the API can take (or pre-create) a stream's batch id. The epoch (when
    the stream first started) keeps a stream that was closed and started again from reusing the ids, and
    so the frame rows, of its earlier batches."""
    return SEPARATOR.join(("stream", site_id, camera_id, epoch, f"{seq:06d}"))


def siteless_stream_batch_id(camera_id: str, epoch: str, seq: int) -> str:
    """`stream:<camera>:<epoch>:<seq>`: the ids stream runs gave their batches before the site was part
    of them (see CameraStreamWorkflow._batch_id)."""
    return SEPARATOR.join(("stream", camera_id, epoch, f"{seq:06d}"))


def legacy_stream_batch_id(camera_id: str, epoch: str, seq: int) -> str:
    """The ids streams gave their batches before streams had a namespace of their own; a stream run
    that started then keeps them (see CameraStreamWorkflow._batch_id)."""
    return f"batch-{camera_id}-stream-{epoch}-{seq:06d}"


@dataclass
class CameraFrame:
    """One stored frame from a live camera: object key only, never bytes."""

    object_key: str
    sha256: str
    size_bytes: int
    content_type: str = ""
    received_at: str = ""  # ISO time the API received it; informational (batching uses workflow time)
    filename: str = ""


@dataclass
class CameraStreamInput:
    camera_id: str
    site_id: str = "default"
    # A batch is cut at max_frames, or max_wait_seconds after the oldest frame waiting, whichever is first.
    max_frames: int = 32
    max_wait_seconds: float = 5.0
    # Copied into every child batch (rules, model alias, chunk size, webhook URL, ...); batch_id,
    # camera_id, site_id and frames are filled per batch. None: FrameBatchInput's defaults.
    batch_template: FrameBatchInput | None = None
    # Continue-as-new after this many batches or history events, or when the server suggests it.
    max_batches_per_run: int = 200
    max_history_events: int = 10_000
    # State carried over continue-as-new; empty on a fresh start.
    stream_epoch: str = ""
    next_seq: int = 0
    batches_started: int = 0
    last_batch_id: str | None = None
    pending: list[CameraFrame] = field(default_factory=list)
    pending_arrived_at: list[float] = field(default_factory=list)  # workflow time, seconds since epoch


@dataclass
class CameraStreamStatus:
    camera_id: str
    stream_epoch: str
    pending: int
    next_seq: int
    batches_started: int  # over the stream's whole life, across continue-as-new
    batches_this_run: int
    last_batch_id: str | None
    closing: bool


@dataclass
class CameraStreamResult:
    camera_id: str
    batches_started: int
    last_batch_id: str | None
