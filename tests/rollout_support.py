"""Helpers of the rollout tests: live traffic as serving would record it under the registry's split
(each frame to the version the split gives it, the shadow share answered by the shadow version too),
with versions that behave as scripted: a good one agrees with the frames' truth, a worse one (as if
trained on shuffled labels) answers at random with low confidence. A detection version (a behaviour with
`boxes`) answers boxes, recorded in predictions.boxes and shadow_predictions.boxes as serving records a
detector's, with the frame's label and confidence from its best box (vision.detector.frame_label)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, DbPool
from tests.polling import in_background
from vision.registry import ModelRegistry
from vision.traffic import TrafficSplit

CLASSES = ("ok", "scratch", "dent", "stain")
DEFECTS = CLASSES[1:]

# How a detection version's boxes stand to a frame's true ones, when it is right about the frame:
TRUE_BOXES = "true"        # where they are (nudged by at most 0.02: two such versions agree at IoU >= 0.5)
MOVED_BOXES = "moved"      # the true class and score, shifted off the true box (IoU 1/7)
WRONG_CLASS = "wrong_class"  # the true place and score, another defect class


@dataclass
class Behaviour:
    accuracy: float
    confidence: float
    infer_ms: float = 4.0
    # A detection version's boxes (TRUE_BOXES, MOVED_BOXES, WRONG_CLASS), each scoring `confidence`; a
    # wrong answer (1 - accuracy) is a box of a random class in a random place, or none. None: a classifier.
    boxes: str | None = None


GOOD = Behaviour(0.95, 0.95)
# A model trained on shuffled labels answers at random: it agrees with a good production on about a
# quarter of the frames, far from the 0.5 gate on any stage's worth of frames. (Right a quarter of the
# time on top of chance, it agreed on about 44%, and the gate's verdict depended on the draw.)
SHUFFLED = Behaviour(0.0, 0.40)
# Detection versions: one that finds the true boxes, one whose boxes are elsewhere (the same classes, so
# the frames' labels still agree), one whose boxes name another class.
DETECTS = Behaviour(0.95, 0.95, boxes=TRUE_BOXES)
MISPLACES = Behaviour(0.95, 0.95, boxes=MOVED_BOXES)
MISNAMES = Behaviour(0.95, 0.95, boxes=WRONG_CLASS)


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))


class LiveTraffic:
    """Batches of frames recorded every `interval` seconds, as the batch path and serving record them."""

    def __init__(self, pool: DbPool, registry: ModelRegistry, behaviours: dict[str, Behaviour], frames: int = 40,
                 interval: float = 0.2, seed: int = 0) -> None:
        self.pool, self.registry, self.behaviours = pool, registry, behaviours
        self.frames, self.interval = frames, interval
        self.rng = random.Random(seed)
        self.by_version: dict[str, int] = {}
        # Only with a detection version among the behaviours, and from their own generator: a classifier-only
        # traffic draws exactly what it drew before boxes existed.
        self.detection = any(b.boxes for b in behaviours.values())
        self.box_rng = random.Random(seed + 1)

    def _answer(self, version: str, truth: str) -> tuple[str, float, bool]:
        b = self.behaviours.get(version, GOOD)
        label = truth if self.rng.random() < b.accuracy else self.rng.choice(CLASSES)
        return label, b.confidence, False

    def _true_boxes(self, truth: str) -> list[dict[str, Any]]:
        """Where the frame's defect is (none for "ok"): a box of 0.2 to 0.35 a side, inside the frame."""
        if truth == "ok":
            return []
        r = self.box_rng
        w, h = r.uniform(0.2, 0.35), r.uniform(0.2, 0.35)
        x0, y0 = r.uniform(0.02, 0.98 - w), r.uniform(0.02, 0.98 - h)
        return [{"x0": round(x0, 4), "y0": round(y0, 4), "x1": round(x0 + w, 4), "y1": round(y0 + h, 4),
                 "label": truth}]

    def _detect(self, version: str, truth_boxes: list[dict[str, Any]]
                ) -> tuple[str, float, dict[str, float], list[dict[str, Any]]]:
        """A detection version's answer: (label, confidence, probabilities, boxes) as serving records them."""
        from vision.boxes import boxes_from
        from vision.detector import frame_label

        b = self.behaviours[version]
        r = self.box_rng
        if r.random() < b.accuracy:
            boxes = []
            for t in truth_boxes:
                dx, dy = r.uniform(-0.02, 0.02), r.uniform(-0.02, 0.02)
                label = t["label"]
                if b.boxes == MOVED_BOXES:  # half a side across and down (or back, at an edge): IoU 1/7
                    w, h = t["x1"] - t["x0"], t["y1"] - t["y0"]
                    dx = w / 2 if t["x1"] + w / 2 <= 1.0 else -w / 2
                    dy = h / 2 if t["y1"] + h / 2 <= 1.0 else -h / 2
                elif b.boxes == WRONG_CLASS:
                    label = r.choice([c for c in DEFECTS if c != label])
                x0, x1 = _clip(t["x0"] + dx), _clip(t["x1"] + dx)
                y0, y1 = _clip(t["y0"] + dy), _clip(t["y1"] + dy)
                boxes.append({"x0": round(x0, 4), "y0": round(y0, 4), "x1": round(x1, 4), "y1": round(y1, 4),
                              "label": label, "score": b.confidence})
        else:
            boxes = [{**t, "score": b.confidence} for t in self._true_boxes(r.choice(CLASSES))]
        label, confidence = frame_label(boxes_from(boxes))
        probabilities = {c: max((x["score"] for x in boxes if x["label"] == c), default=0.0) for c in DEFECTS}
        return label, confidence, probabilities, boxes

    async def record_batch(self) -> None:
        production = (await asyncio.to_thread(self.registry.aliases))["production"]
        split = await asyncio.to_thread(self.registry.traffic)
        batch_id = f"batch:rollout-line:{uuid.uuid4().hex[:10]}"
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count)"
                " VALUES (%s, 'rollout-line', 'plant-rollout', %s, 'completed', %s)",
                (batch_id, batch_id, self.frames))
            for i in range(self.frames):
                frame_id = f"{batch_id}:{i:04d}"
                truth = self.rng.choice(CLASSES)
                await conn.execute(
                    "INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, size_bytes, status)"
                    " VALUES (%s, %s, %s, %s, %s, 1000, 'accepted')",
                    (frame_id, batch_id, i, f"frames/sha256/00/{uuid.uuid4().hex * 2}", uuid.uuid4().hex * 2))
                version = split.version_for(frame_id, production)
                self.by_version[version] = self.by_version.get(version, 0) + 1
                if self.detection:
                    await self._record_detections(conn, frame_id, truth, version, split)
                    continue
                label, confidence, unfamiliar = self._answer(version, truth)
                infer_ms = self.behaviours.get(version, GOOD).infer_ms
                await conn.execute(
                    "INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, timings,"
                    " novelty, unfamiliar) VALUES (%s, %s, %s, %s, %s, %s, 0.2, %s)",
                    (frame_id, version, label, confidence, Jsonb({label: confidence}), Jsonb({"infer_ms": infer_ms}),
                     unfamiliar))
                if split.shadows(frame_id) and split.shadow_version:
                    label, confidence, unfamiliar = self._answer(split.shadow_version, truth)
                    await conn.execute(
                        "INSERT INTO shadow_predictions (frame_id, model_version, label, confidence, novelty,"
                        " unfamiliar, infer_ms) VALUES (%s, %s, %s, %s, 0.2, %s, %s)",
                        (frame_id, split.shadow_version, label, confidence, unfamiliar, infer_ms))

    async def _record_detections(self, conn: DbConnection, frame_id: str, truth: str, version: str,
                                 split: TrafficSplit) -> None:
        """A frame's answers when the versions are detectors: boxes beside the label, in both tables."""
        truth_boxes = self._true_boxes(truth)
        label, confidence, probabilities, boxes = self._detect(version, truth_boxes)
        await conn.execute(
            "INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, timings,"
            " novelty, unfamiliar, boxes) VALUES (%s, %s, %s, %s, %s, %s, 0.2, false, %s)",
            (frame_id, version, label, confidence, Jsonb(probabilities),
             Jsonb({"infer_ms": self.behaviours[version].infer_ms}), Jsonb(boxes)))
        if split.shadows(frame_id) and split.shadow_version:
            shadow = split.shadow_version
            label, confidence, _, boxes = self._detect(shadow, truth_boxes)
            await conn.execute(
                "INSERT INTO shadow_predictions (frame_id, model_version, label, confidence, novelty,"
                " unfamiliar, infer_ms, boxes) VALUES (%s, %s, %s, %s, 0.2, false, %s, %s)",
                (frame_id, shadow, label, confidence, self.behaviours[shadow].infer_ms, Jsonb(boxes)))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LiveTraffic]:
        async def loop() -> None:
            while True:
                await self.record_batch()
                await asyncio.sleep(self.interval)  # the pace of a camera, not a synchronisation

        async with in_background(loop()):
            yield self
