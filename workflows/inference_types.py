"""Dataclasses the classification and prediction-recording activities exchange with workflows.

Only object keys go to serving; predictions come back compact (floats rounded to 4 decimals, a few
quality features and timings) so a 32-frame batch's whole history stays well under 64 KB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workflows.batch_types import FrameOutcome, FrameRef


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
