"""Request and response bodies of the batch routes, as the OpenAPI schema shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


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


class BatchSummary(BaseModel):
    batch_id: str
    camera_id: str
    site_id: str
    status: str = Field(description="received, running, completed or failed")
    frame_count: int
    accepted_count: int
    rejected_count: int
    model_version: str | None = None
    created_at: datetime
    completed_at: datetime | None = None
    temporal_ui_url: str = Field(description="this batch's workflow history in the Temporal Web UI")


class BatchDetail(BatchSummary):
    frames: list[FrameResult]


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
