"""Image-quality features of a frame, computed by the preprocessor and stored with each prediction.

These are what drift checks compare between a reference window and now: a dimmer line moves
brightness, a dirty lens moves sharpness, a new sensor moves the colour means. They are computed on
the model-input-sized array so they cost little and mean the same whatever the camera resolution.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("brightness", "contrast", "sharpness", "saturation", "r_mean", "g_mean", "b_mean")


def quality_features_batch(rgb: np.ndarray) -> list[dict[str, float]]:
    """uint8 NHWC RGB -> one dict of features per frame, in roughly 0..1, rounded to 4 decimals.

    Vectorised over the batch: the preprocessor computes a whole request at once, which costs a
    fraction of a per-frame loop (these run for every served frame, next to a model that is cheap)."""
    if rgb.ndim == 3:
        rgb = rgb[None]
    # Every second pixel each way: a quarter of the work, and these are whole-frame statistics.
    x = rgb[:, ::2, ::2].astype(np.float32) * (1.0 / 255.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    # Variance of the 4-neighbour Laplacian: falls quickly as a frame blurs.
    lap = (-4 * luma[:, 1:-1, 1:-1] + luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:])
    mx, mn = x.max(axis=3), x.min(axis=3)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    n = len(x)
    means = x.reshape(n, -1, 3).mean(axis=1)
    table = np.stack([luma.reshape(n, -1).mean(1), luma.reshape(n, -1).std(1), lap.reshape(n, -1).var(1) * 10.0,
                      sat.reshape(n, -1).mean(1), means[:, 0], means[:, 1], means[:, 2]], axis=1).astype(np.float64).round(4)
    return [dict(zip(FEATURES, row)) for row in table.tolist()]


def quality_features(rgb: np.ndarray) -> dict[str, float]:
    """uint8 HWC RGB -> features of one frame (see quality_features_batch)."""
    return quality_features_batch(rgb[None])[0]
