"""Boxes: where a defect is in a frame, as the generated camera draws it, the detector answers it and a
reviewer corrects it.

One shape everywhere (ground truth, serving replies, review labels, dataset snapshots, COCO/YOLO export):
corners in coordinates relative to the frame (0..1, x to the right, y down), so a box means the same thing
at any resolution; exports convert to pixels with the frame's width and height.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


class BoxError(ValueError):
    """A box that cannot be accepted; `field` names what is wrong, for a 422 that points at it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    score: float | None = None  # the detector's confidence; None for ground truth and reviewed boxes

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.score is None:
            del out["score"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], field: str = "box") -> Box:
        """A box from its JSON form, checked: inside the frame, positive size, a class named."""
        try:
            x0, y0, x1, y1 = (float(data[k]) for k in ("x0", "y0", "x1", "y1"))
        except KeyError as exc:
            raise BoxError(f"{field}.{exc.args[0]}", "missing") from None
        except (TypeError, ValueError):
            raise BoxError(field, "corners must be numbers") from None
        label = data.get("label")
        if not isinstance(label, str) or not label.strip():
            raise BoxError(f"{field}.label", "a box needs a class")
        score = data.get("score")
        box = cls(x0, y0, x1, y1, label.strip(), None if score is None else float(score))
        box.check(field)
        return box

    def check(self, field: str = "box") -> None:
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise BoxError(f"{field}.{name}", f"{value} is outside the frame (0..1)")
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise BoxError(field, "x1 must exceed x0 and y1 exceed y0")
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise BoxError(f"{field}.score", f"{self.score} is not a probability")


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def match(left: Sequence[Box], right: Sequence[Box], threshold: float = 0.5,
          same_label: bool = True) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU (highest first), as detection metrics and box consensus use it."""
    pairs = sorted(((iou(a, b), i, j) for i, a in enumerate(left) for j, b in enumerate(right)
                    if not same_label or a.label == b.label), reverse=True)
    used_left: set[int] = set()
    used_right: set[int] = set()
    matched: list[tuple[int, int]] = []
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i in used_left or j in used_right:
            continue
        used_left.add(i)
        used_right.add(j)
        matched.append((i, j))
    return sorted(matched)


def agree(left: Sequence[Box], right: Sequence[Box], threshold: float = 0.5) -> bool:
    """Two box sets agree when every box of each is matched, same class, at IoU >= threshold."""
    return len(left) == len(right) and len(match(left, right, threshold)) == len(left)


def boxes_from(items: Iterable[dict[str, Any]], field: str = "boxes") -> list[Box]:
    return [Box.from_dict(item, f"{field}[{n}]") for n, item in enumerate(items)]
