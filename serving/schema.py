"""The HTTP contract of the inference service, shared by the Serve app and its client."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_FRAMES_PER_REQUEST = 1024


# At least workflows.batch_types.MAX_FRAME_ID (the longest frame id a batch can have; a test holds the
# two together): a batch the API accepts must never be refused here, where a refusal means retries.
MAX_FRAME_ID = 320


class FrameKey(BaseModel):
    frame_id: str = Field(min_length=1, max_length=MAX_FRAME_ID)
    object_key: str = Field(min_length=1, max_length=512)


class ClassifyRequest(BaseModel):
    frames: list[FrameKey] = Field(min_length=1, max_length=MAX_FRAMES_PER_REQUEST)
    # An alias (production, candidate, shadow) or a version name (v3).
    model: str = Field("production", min_length=1, max_length=64)


class Prediction(BaseModel):
    frame_id: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    quality: dict[str, float]
    timings: dict[str, float]
    # How far the frame is from what the model was trained on, and whether that is past the threshold
    # calibrated at training time: an unfamiliar frame's label says nothing.
    novelty: float | None = None
    unfamiliar: bool = False
    # What decoding the frame found; the preprocessor is the one place a frame is decoded.
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    image_format: str | None = None
    # The version that made this prediction: with a traffic split (vision.traffic) the frames of one
    # request may be answered by different versions. Empty from a service older than the split.
    model_version: str = ""
    # A detection version's boxes (vision.boxes.Box.as_dict(): relative corners, class, score), best
    # first; None from a classifier.
    boxes: list[dict] | None = None


class ShadowPrediction(BaseModel):
    """What the shadow version said about a frame: stored apart and compared, never acted on."""

    frame_id: str
    model_version: str
    label: str
    confidence: float
    novelty: float | None = None
    unfamiliar: bool = False
    infer_ms: float | None = None
    boxes: list[dict] | None = None  # a detection version's, as in Prediction


class VersionFailure(BaseModel):
    """A frame a canary or shadow version could not classify (production answered it, if it was live)."""

    frame_id: str
    model_version: str
    shadow: bool
    error: str


class Rejection(BaseModel):
    frame_id: str
    reason: str
    sha256: str = ""  # empty when the frame could not be fetched


class ClassifyResponse(BaseModel):
    model_version: str
    backend: str
    predictions: list[Prediction]
    rejections: list[Rejection]
    timings: dict[str, float]
    shadow_predictions: list[ShadowPrediction] = []
    version_failures: list[VersionFailure] = []


class ErrorBody(BaseModel):
    error: str  # a stable code: model_not_found, store_unavailable, model_integrity, ...
    detail: str
    retryable: bool
