"""The backend interface and the factory that picks one.

A backend is built from a verified artifact set (manifest + file bytes) and does one thing:
`scores(uint8 NHWC pixels) -> (float32 logits, float32 novelty or None)`, one forward pass of a graph
that normalises in itself (vision.model.PixelInput) and, for a version calibrated for novelty, scores
how unfamiliar each frame is (vision.novelty). `predict` is the logits alone. Resizing and
post-processing stay outside, in vision.processing, so every backend sees the same pixels and reports
the same class order.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from vision.artifacts import NOVELTY, ONNX, WEIGHTS, Manifest

BACKENDS = ("onnxruntime", "torch-cuda", "torch-cpu", "tensorrt")


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine (no GPU, package missing); the message says why."""


Scores = tuple[np.ndarray, np.ndarray | None]


class Backend(Protocol):
    name: str

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...

    def scores(self, pixels: np.ndarray) -> Scores: ...


def required_files(name: str) -> tuple[str, ...]:
    """Which artifact files a backend loads: only those are fetched and sha256-checked."""
    return (WEIGHTS,) if name.startswith("torch") else (ONNX,)


def optional_files(name: str) -> tuple[str, ...]:
    """Files a backend loads when the version has them: the torch graph is built here, so it needs the
    novelty statistics the ONNX export carries inside."""
    return (NOVELTY,) if name.startswith("torch") else ()


def default_backend() -> str:
    """torch on CUDA where a GPU is present, onnxruntime on the CPU everywhere else."""
    try:
        import torch

        if torch.cuda.is_available():
            return "torch-cuda"
    except ImportError:
        pass
    return "onnxruntime"


class DetectionBackend(Protocol):
    """A detection version's backend (vision.detector): one pass answers every output of the served
    graph, boxes, scores, classes and (when calibrated) novelty, for vision.detector.decide_detections."""

    name: str

    def outputs(self, pixels: np.ndarray) -> list[np.ndarray]: ...


def make_backend(name: str, manifest: Manifest, files: dict[str, bytes], *, threads: int | None = None) -> Backend:
    if name == "auto":
        name = default_backend()
    if manifest.task == "detection" and name in ("torch-cuda", "torch-cpu"):
        from serving.backends.torch_detector import TorchDetectorBackend

        return TorchDetectorBackend(manifest, files[WEIGHTS], device="cuda" if name == "torch-cuda" else "cpu",
                                    threads=threads, novelty=files.get(NOVELTY))  # type: ignore[return-value]
    if manifest.task == "detection" and name == "tensorrt":
        raise BackendUnavailable("detection versions are served by onnxruntime or torch; the TensorRT backend "
                                 "builds classifiers only")
    if name == "onnxruntime":
        from serving.backends.onnx import OnnxRuntimeBackend

        return OnnxRuntimeBackend(files[ONNX], manifest.processing, threads=threads)
    if name in ("torch-cuda", "torch-cpu"):
        from serving.backends.torch_backend import TorchBackend

        return TorchBackend(manifest, files[WEIGHTS], device="cuda" if name == "torch-cuda" else "cpu", threads=threads,
                            novelty=files.get(NOVELTY))
    if name == "tensorrt":
        from serving.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(files[ONNX], manifest.processing)
    raise ValueError(f"unknown backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")
