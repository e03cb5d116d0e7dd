"""Image-quality features of a frame, computed by the preprocessor and stored with each prediction.

These are what drift checks compare between a reference window and now: a dimmer line moves
brightness, a dirty lens moves sharpness, a new sensor moves the colour means. They are computed on
the model-input-sized array so they cost little and mean the same whatever the camera resolution.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("brightness", "contrast", "sharpness", "saturation", "r_mean", "g_mean", "b_mean")


def quality_features(rgb: np.ndarray) -> dict[str, float]:
    """uint8 HWC RGB -> features in roughly 0..1, rounded to 4 decimals."""
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    # Variance of the 4-neighbour Laplacian: falls quickly as a frame blurs.
    lap = (-4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:])
    mx, mn = x.max(axis=2), x.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    values = {
        "brightness": luma.mean(),
        "contrast": luma.std(),
        "sharpness": lap.var() * 10.0,
        "saturation": sat.mean(),
        "r_mean": r.mean(),
        "g_mean": g.mean(),
        "b_mean": b.mean(),
    }
    return {k: round(float(v), 4) for k, v in values.items()}
