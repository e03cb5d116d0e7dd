"""The HTTP contract of the inference service, shared by the Serve app and its client."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_FRAMES_PER_REQUEST = 1024


class FrameKey(BaseModel):
    frame_id: str = Field(min_length=1, max_length=200)
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


class Rejection(BaseModel):
    frame_id: str
    reason: str


class ClassifyResponse(BaseModel):
    model_version: str
    backend: str
    predictions: list[Prediction]
    rejections: list[Rejection]
    timings: dict[str, float]


class ErrorBody(BaseModel):
    error: str  # a stable code: model_not_found, store_unavailable, model_integrity, ...
    detail: str
    retryable: bool
