"""Pre- and post-processing, the one definition shared by training, export and serving.

Training, the raw-backend benchmark and the Ray Serve preprocessor all call these functions, and a
model's manifest records the parameters, so a served model sees exactly the pixels it was trained on
and its output columns always map to the same class names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

# OpenCV's own thread pool would fight the preprocessor's threads and the model for the same cores;
# the preprocessor parallelises across frames instead.
cv2.setNumThreads(1)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Not slots=True: one decision per served frame crosses a Ray hop, and a slotted dataclass unpickles
# at less than half the speed of a plain one.
@dataclass(frozen=True)
class Decision:
    """The model's answer for one frame: the most likely class, its probability, and every class's;
    and how unfamiliar the frame is (vision.novelty: 1.0 at the threshold calibrated at training time,
    above it `unfamiliar`). A model without novelty calibration answers 0.0 and never unfamiliar."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    novelty: float = 0.0
    unfamiliar: bool = False
    # A detection version's boxes in the frame (vision.boxes.Box.as_dict(), best first); None from a
    # classifier. `label` and `confidence` are then the frame's answer (vision.detector.decide_detections).
    boxes: list[dict] | None = None


@dataclass(frozen=True)
class Processing:
    classes: tuple[str, ...]
    input_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def resize(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """RGB frame (uint8 HWC array or PIL image) -> uint8 HWC array at the model's input size.

        Kept as uint8: the model normalises inside its own graph (vision.model.PixelInput), and uint8
        is four times less to move between the Serve replicas, or to a GPU, than float32. OpenCV
        resizes at about a quarter of Pillow's cost; area averaging when shrinking by 2x or more,
        where bilinear would alias, bilinear otherwise."""
        if isinstance(image, Image.Image):
            image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        height, width = image.shape[:2]
        size = self.input_size
        if (width, height) == (size, size):
            return np.ascontiguousarray(image, dtype=np.uint8)
        shrink = min(width, height) / size
        interpolation = cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interpolation)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW, scaled to 0..1 then standardised per channel.

        Current exports normalise in their own graph (vision.model.PixelInput) and never need this.
        It feeds older exports that take float32 NCHW, and is the reference PixelInput is tested on."""
        if batch.ndim == 3:
            batch = batch[None]
        x = batch.astype(np.float32) * (1.0 / 255.0)
        x -= np.asarray(self.mean, np.float32)
        x /= np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def decide(self, logits: np.ndarray, novelty: np.ndarray | None = None) -> list[Decision]:
        """One decision per row of logits (and novelty score, when the model has one), its floats
        rounded to 4 decimals. A frame is unfamiliar when its novelty is above 1."""
        probs = self.probabilities(logits)
        scores = np.zeros(len(probs), np.float64) if novelty is None else np.asarray(novelty, np.float64)
        out = []
        for row, score in zip(probs, scores, strict=True):
            k = int(row.argmax())
            out.append(Decision(self.classes[k], round(float(row[k]), 4),
                                {c: round(float(p), 4) for c, p in zip(self.classes, row, strict=True)},
                                round(float(score), 4), bool(score > 1.0)))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Processing:
        return cls(classes=tuple(d["classes"]), input_size=int(d["input_size"]),
                   mean=tuple(d["mean"]), std=tuple(d["std"]))
