"""Request and response bodies of the batch, frame and camera routes, as the OpenAPI schema shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from workflows.batch_types import ID_PATTERN


class StoredFrame(BaseModel):
    object_key: str = Field(description="key of an object already in the store", examples=["uploads/line-1/0001.jpg"])
    filename: str = ""


class BatchFromStore(BaseModel):
    """A batch of frames the caller already put in the object store."""

    camera_id: str = Field(pattern=ID_PATTERN, examples=["line-1"])
    site_id: str = Field("default", pattern=ID_PATTERN, examples=["plant-a"])
    idempotency_key: str | None = Field(None, pattern=ID_PATTERN, examples=["shift-42-batch-7"])
    webhook_url: str | None = Field(None, examples=["https://alerts.example.com/sightline"])
    frames: list[StoredFrame] = Field(min_length=1)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "camera_id": "line-1",
                    "site_id": "plant-a",
                    "idempotency_key": "shift-42-batch-7",
                    "frames": [{"object_key": "uploads/line-1/0001.jpg"}, {"object_key": "uploads/line-1/0002.jpg"}],
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
    label_counts: dict[str, int] = Field({}, description="classified frames by label")
    model_version: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = Field(None, description="from submission to completion")
    temporal_ui_url: str = Field(description="this batch's workflow history in the Temporal Web UI")


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
    temporal_ui_url: str

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "batch_id": "batch-line-1-shift-42",
                    "workflow_id": "batch-line-1-shift-42",
                    "status": "received",
                    "frame_count": 32,
                    "created": True,
                    "temporal_ui_url": "http://127.0.0.1:8233/namespaces/default/workflows/batch-line-1-shift-42",
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
    predictions: list[Prediction] = Field(description="every model version's prediction, newest first")
    routes: list[str] = []
    image_url: str = Field(description="a time-limited URL of the image")
    image_url_expires_at: datetime


class CameraFrameAccepted(BaseModel):
    camera_id: str
    stream_workflow_id: str
    object_key: str
