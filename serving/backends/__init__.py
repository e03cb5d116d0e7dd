"""Inference backends behind one interface: float32 NCHW in, logits out."""

from serving.backends.base import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    default_backend,
    make_backend,
)

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "default_backend", "make_backend"]
