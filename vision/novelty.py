"""How unfamiliar a frame is: a novelty score computed in the model's graph, next to its logits.

A softmax score is not familiarity: a frame of an empty belt or a cardboard box still gets some class
at high confidence. The served graph therefore also measures how far a frame lies from the frames the
model was trained on: the Mahalanobis distance of two feature levels to a Gaussian fitted on the
training frames,

- the frame's coarse colour layout (the normalised input averaged to a 4x4 grid), which moves when
  the part is missing, something else lies on the belt, or the scene is another scene entirely, and
- the statistics of the network's first-stage feature maps (averaged to a small grid), which move
  with texture the model never saw: sensor noise, foliage, print.

The covariance is shrunk towards its mean variance (a few thousand frames do not pin down a hundred
dimensions), and the threshold is calibrated at training time on held-out frames: a high percentile
(99.5th by default) of their distances, taken at its upper confidence bound so that a few unlucky
calibration frames do not set it low. The graph divides by it, so the served score reads the same for
every model version: below 1 familiar, above 1 unfamiliar. (The graph's half is vision.model.NoveltyHead;
this module is the statistics, in numpy.)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

METHOD = "mahalanobis-multilevel"
# The input's colour layout is averaged to this grid; the first stage's feature maps to EARLY_GRID.
INPUT_GRID = 4
EARLY_GRID = {"mobilenet_v3_small": 2, "resnet18": 1}
DEFAULT_PERCENTILE = 99.5
SHRINKAGE = 0.2
# The threshold is the calibration order statistic that bounds the percentile from above with this
# confidence (a one-sided binomial bound on how many held-out frames lie above the true percentile).
CONFIDENCE = 0.9


@dataclass
class NoveltyModel:
    mean: np.ndarray  # [D]
    whitening: np.ndarray  # [D, D]: the precision matrix is whitening @ whitening.T
    threshold: float  # squared distance at which a frame becomes unfamiliar
    percentile: float
    calibration_frames: int
    shrinkage: float = SHRINKAGE
    method: str = METHOD

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean.astype(np.float32), whitening=self.whitening.astype(np.float32),
                 threshold=np.float64(self.threshold), percentile=np.float64(self.percentile),
                 calibration_frames=np.int64(self.calibration_frames), shrinkage=np.float64(self.shrinkage),
                 method=np.str_(self.method))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> NoveltyModel:
        with np.load(io.BytesIO(data)) as f:
            return cls(f["mean"], f["whitening"], float(f["threshold"]), float(f["percentile"]),
                       int(f["calibration_frames"]), float(f["shrinkage"]), str(f["method"]))

    def summary(self) -> dict:
        """What the manifest and the model card record about it."""
        return {"method": self.method, "threshold": round(self.threshold, 4), "percentile": self.percentile,
                "calibration_frames": self.calibration_frames, "feature_dims": int(self.mean.shape[0]),
                "shrinkage": self.shrinkage, "unfamiliar_above": 1.0}


def fit_gaussian(features: np.ndarray, shrinkage: float = SHRINKAGE) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix of a shrunk-covariance Gaussian over the rows of `features`."""
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False, bias=True)
    dims = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / dims) * np.eye(dims)
    precision = np.linalg.inv(cov)
    # Cholesky of the precision: (x - mean) @ L has the Mahalanobis distance as its squared norm.
    whitening = np.linalg.cholesky((precision + precision.T) / 2)
    return mean.astype(np.float32), whitening.astype(np.float32)


def squared_distances(features: np.ndarray, mean: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    z = (np.asarray(features, np.float64) - mean) @ whitening
    return (z * z).sum(axis=1)


def upper_bound_quantile(scores: np.ndarray, percentile: float, confidence: float = CONFIDENCE) -> float:
    """A calibration score at or above the `percentile`-th percentile of the score's distribution with
    probability `confidence`: the order statistic with k scores above it, where k is the largest count
    that as few as 1 - confidence of samples of n frames would fall short of (a binomial bound)."""
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    if n == 0:
        raise ValueError("no calibration frames")
    above = 1 - percentile / 100.0  # the chance that one frame scores above the true percentile
    # X, the count of n frames above the true percentile, is Binomial(n, above). The (k+1)-th largest
    # score lies above the percentile unless X <= k: take the largest k with P(X <= k) <= 1 - confidence.
    cumulative, k = 0.0, 0
    while k < n:
        cumulative += math.comb(n, k) * above**k * (1 - above) ** (n - k)
        if cumulative > 1 - confidence:
            break
        k += 1
    k = max(0, k - 1)
    return float(s[n - 1 - k])


def calibrate(train_features: np.ndarray, calibration_features: np.ndarray,
              percentile: float = DEFAULT_PERCENTILE, shrinkage: float = SHRINKAGE) -> NoveltyModel:
    """Fit on the training frames, set the threshold on held-out calibration frames."""
    mean, whitening = fit_gaussian(train_features, shrinkage)
    scores = squared_distances(calibration_features, mean, whitening)
    threshold = upper_bound_quantile(scores, percentile)
    return NoveltyModel(mean, whitening, threshold, percentile, len(calibration_features), shrinkage)
