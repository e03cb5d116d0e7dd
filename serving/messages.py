"""The values the Serve deployments pass each other through their handles (Ray pickles them).

Typed for the hops between the preprocessor and the classifier only: the HTTP body keeps the shape of
serving.schema, and the preprocessor builds it from plain dicts (see Preprocessor.classify).
"""

from __future__ import annotations

from dataclasses import dataclass

from vision.processing import Decision, Processing


@dataclass(frozen=True)
class ResolvedModel:
    """The version an alias or version name resolved to, loaded and ready: how to feed it its frames."""

    version: str
    backend: str
    processing: Processing


@dataclass(frozen=True)
class Classification:
    """The classifier's answer for a request's frames (or a slice of them), in the frames' order."""

    version: str
    backend: str
    decisions: list[Decision]
    infer_ms: float  # the forward passes that held these frames
    batch_frames: int  # frames in the largest of those passes, other requests' frames included


@dataclass(frozen=True)
class ModelDescription:
    """A version a classifier replica holds, as GET /v1/models lists it."""

    version: str
    backend: str
    architecture: str
    classes: list[str]
    input_size: int
    task: str = "classification"
