"""Request and response bodies of the batch, frame and camera routes, as the OpenAPI schema shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.camera_health import CameraHealth
from workflows.batch_types import DEFAULT_MODEL, KEY_PATTERN, MAX_MODEL, MODEL_PATTERN, NAME_PATTERN

MODEL_DESCRIPTION = ("the model that answers the batch: an alias (production, candidate, shadow) or a version "
                     "name (v7); default production, whose frames alone follow a rollout's canary and shadow "
                     "split. A version or alias that does not exist answers 422 naming the field `model`")


class StoredFrame(BaseModel):
    object_key: str = Field(max_length=512, description="key of an object you uploaded: under uploads/<your key id>/",
                            examples=["uploads/3f9a2c1d4b5e/0001.jpg"])
    filename: str = Field("", max_length=255)


class BatchFromStore(BaseModel):
    """A batch of frames the caller already put in the object store."""

    camera_id: str = Field(pattern=NAME_PATTERN, examples=["line-1"])
    site_id: str = Field("default", pattern=NAME_PATTERN, examples=["plant-a"])
    idempotency_key: str | None = Field(None, pattern=KEY_PATTERN, examples=["shift-42-batch-7"])
    webhook_url: str | None = Field(None, max_length=2048, examples=["https://alerts.example.com/sightline"])
    # Checked by api.submission.check_model, as the multipart form's is (one 422 shape naming `model`);
    # the pattern is here for the schema's readers.
    model: str | None = Field(None, description=MODEL_DESCRIPTION, examples=[DEFAULT_MODEL, "v7"],
                              json_schema_extra={"pattern": MODEL_PATTERN, "maxLength": MAX_MODEL})
    frames: list[StoredFrame] = Field(min_length=1, max_length=1024)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "camera_id": "line-1",
                    "site_id": "plant-a",
                    "idempotency_key": "shift-42-batch-7",
                    "frames": [{"object_key": "uploads/3f9a2c1d4b5e/0001.jpg"},
                               {"object_key": "uploads/3f9a2c1d4b5e/0002.jpg"}],
                }
            ]
        }
    }


class Prediction(BaseModel):
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float] = {}
    quality: dict[str, float] = {}
    novelty: float | None = Field(None, description="distance from the model's training data")
    unfamiliar: bool = Field(False, description="past the novelty threshold calibrated at training time")
    boxes: list[dict[str, Any]] | None = Field(
        None, description="a detection version's boxes (relative corners, class, score); none for a classifier")
    created_at: datetime | None = None


class FrameResult(BaseModel):
    frame_id: str
    position: int
    filename: str
    object_key: str
    size_bytes: int
    status: str = Field(description="pending, accepted or rejected")
    reject_reason: str | None = None
    width: int | None = None
    height: int | None = None
    redaction_revision: int | None = Field(None, description="the privacy settings revision the stored frame was "
                                           "redacted under; null: stored as received")
    prediction: Prediction | None = Field(None, description="the latest prediction, once classified")
    routes: list[str] = Field(
        [], description="where the frame was sent: review:low_confidence, review:qa_sample, alert:defect")


class BatchSummary(BaseModel):
    batch_id: str
    camera_id: str
    site_id: str
    status: str = Field(description="received, running, completed or failed")
    frame_count: int
    accepted_count: int
    rejected_count: int
    sent_to_review: int = 0
    reviews_pending: int = Field(0, description="review tasks of this batch not decided yet")
    reviews_decided: int = 0
    review_corrections: int = Field(0, description="decisions where the reviewer changed the model's label")
    reviews_escalated: int = 0
    defect_count: int = 0
    unfamiliar_count: int = Field(0, description="frames unlike anything the model was trained on, sent to review")
    label_counts: dict[str, int] = Field({}, description="classified frames by label")
    failure_reason: str | None = Field(None, description="why a failed batch failed")
    model: str = Field(DEFAULT_MODEL, description="the alias or version the batch named to answer it")
    model_version: str | None = Field(None, description="the version that answered the batch (production's when "
                                      "it named production) when it was classified")
    version_counts: dict[str, int] = Field({}, description="classified frames by the model version that answered "
                                           "each one (a canary's share is its own)")
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = Field(None, description="from submission to completion")
    temporal_ui_url: str = Field(description="this batch's workflow history in the Temporal Web UI")
    trace_id: str | None = Field(None, description="the OpenTelemetry trace of this batch (`sightline trace "
                                 "<batch id>`, or Jaeger); null when it was not traced")


class BatchDetail(BatchSummary):
    frames: list[FrameResult]


class BatchPage(BaseModel):
    items: list[BatchSummary]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")


class PredictionPage(BaseModel):
    items: list[FrameResult]
    next_cursor: str | None = None


class BatchAccepted(BaseModel):
    batch_id: str
    workflow_id: str
    status: str
    frame_count: int
    created: bool = Field(description="false when the idempotency key named an existing batch")
    rerun: bool = Field(False, description="the idempotency key named a failed batch, which runs again")
    temporal_ui_url: str
    trace_id: str | None = Field(None, description="the OpenTelemetry trace of this batch; null when not traced")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "batch_id": "batch:plant-a:line-1:shift-42",
                    "workflow_id": "batch:plant-a:line-1:shift-42",
                    "status": "received",
                    "frame_count": 32,
                    "created": True,
                    "temporal_ui_url": "http://127.0.0.1:8233/namespaces/default/workflows/batch:line-1:shift-42",
                }
            ]
        }
    }


class FrameDetail(BaseModel):
    frame_id: str
    batch_id: str
    position: int
    object_key: str
    sha256: str
    status: str
    reject_reason: str | None = None
    width: int | None = None
    height: int | None = None
    redaction_revision: int | None = Field(None, description="the privacy settings revision the stored frame was "
                                           "redacted under; null: stored as received. `sha256` is always of the "
                                           "bytes received")
    predictions: list[Prediction] = Field(description="every model version's prediction, newest first")
    routes: list[str] = []
    image_url: str | None = Field(None, description="a time-limited URL of the image; none for a rejected frame")
    image_url_expires_at: datetime | None = None


class CameraSummary(BaseModel):
    """A camera's batches over a window: what ops watch for a camera whose world changed."""

    camera_id: str
    site_id: str
    batches: int
    frames: int
    classified: int
    rejected: int
    unfamiliar: int = Field(description="frames unlike anything the model was trained on")
    defects: int
    sent_to_review: int
    last_batch_at: datetime | None = None
    health: CameraHealth | None = Field(None, description="image quality against the camera's calibrated "
                                        "range; null before its first classified frames")


class CameraList(BaseModel):
    window_hours: float
    cameras: list[CameraSummary]


class Uploaded(BaseModel):
    object_key: str = Field(description="name it in a JSON batch submission")
    size_bytes: int
    sha256: str
    content_type: str


class CameraFrameAccepted(BaseModel):
    camera_id: str
    site_id: str
    stream_workflow_id: str
    object_key: str
