"""Image-quality features of a frame, computed by the preprocessor and stored with each prediction.

These are what drift checks compare between a reference window and now: a dimmer line moves
brightness, a dirty lens moves sharpness, a new sensor moves the colour means. They are computed on
the model-input-sized array so they cost little and mean the same whatever the camera resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

FEATURES = ("brightness", "contrast", "sharpness", "saturation", "r_mean", "g_mean", "b_mean")


def quality_features_batch(rgb: np.ndarray) -> list[dict[str, float]]:
    """uint8 NHWC RGB -> one dict of features per frame, in roughly 0..1, rounded to 4 decimals.

    Colour conversions run once over the whole request (the frames stacked as one tall image) and
    the statistics per frame through OpenCV: these run for every served frame next to a small model,
    and numpy's reductions over the 3-wide channel axis cost more than the model's forward pass."""
    if rgb.ndim == 3:
        rgb = rgb[None]
    n, h, w, _ = rgb.shape
    tall = np.ascontiguousarray(rgb).reshape(n * h, w, 3)
    luma = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).reshape(n, h, w)
    saturation = cv2.extractChannel(cv2.cvtColor(tall, cv2.COLOR_RGB2HSV), 1).reshape(n, h, w)
    table = np.empty((n, len(FEATURES)), np.float64)
    for i in range(n):
        mean, std = cv2.meanStdDev(luma[i])
        # Variance of the 4-neighbour Laplacian: falls quickly as a frame blurs.
        _, lap_std = cv2.meanStdDev(cv2.Laplacian(luma[i], cv2.CV_16S, ksize=1))
        r, g, b, _ = cv2.mean(rgb[i])
        table[i] = (mean[0, 0], std[0, 0], lap_std[0, 0] ** 2 * (10.0 / 255.0), cv2.mean(saturation[i])[0], r, g, b)
    table *= 1.0 / 255.0
    return [dict(zip(FEATURES, row, strict=True)) for row in table.round(4).tolist()]


def quality_features(rgb: np.ndarray) -> dict[str, float]:
    """uint8 HWC RGB -> features of one frame (see quality_features_batch)."""
    return quality_features_batch(rgb[None])[0]
