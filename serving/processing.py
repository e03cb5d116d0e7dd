"""Pre- and post-processing, the one definition shared by training, export and serving.

Training, the raw-backend benchmark and the Ray Serve preprocessor all call these functions, and a
model's manifest records the parameters, so a served model sees exactly the pixels it was trained on
and its output columns always map to the same class names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Processing:
    classes: tuple[str, ...]
    input_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def resize(self, image: Image.Image) -> np.ndarray:
        """RGB image -> uint8 HWC array at the model's input size. Kept as uint8 until the classifier
        normalises it: four times less to move between the Serve replicas than float32."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.input_size, self.input_size):
            image = image.resize((self.input_size, self.input_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW, scaled to 0..1 then standardised per channel."""
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

    def decide(self, logits: np.ndarray) -> list[tuple[str, float, dict[str, float]]]:
        """Per row: (label, confidence, probabilities by class name), floats rounded to 4 decimals."""
        probs = self.probabilities(logits)
        out = []
        for row in probs:
            k = int(row.argmax())
            out.append((self.classes[k], round(float(row[k]), 4),
                        {c: round(float(p), 4) for c, p in zip(self.classes, row)}))
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Processing:
        return cls(classes=tuple(d["classes"]), input_size=int(d["input_size"]),
                   mean=tuple(d["mean"]), std=tuple(d["std"]))
