"""Helpers of the rollout tests: live traffic as serving would record it under the registry's split
(each frame to the version the split gives it, the shadow share answered by the shadow version too),
with versions that behave as scripted: a good one agrees with the frames' truth, a worse one (as if
trained on shuffled labels) answers at random with low confidence."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from infra.db import DbPool
from tests.polling import in_background
from vision.registry import ModelRegistry

CLASSES = ("ok", "scratch", "dent", "stain")


@dataclass
class Behaviour:
    accuracy: float
    confidence: float
    infer_ms: float = 4.0


GOOD = Behaviour(0.95, 0.95)
# A model trained on shuffled labels answers at random: it agrees with a good production on about a
# quarter of the frames, far from the 0.5 gate on any stage's worth of frames. (Right a quarter of the
# time on top of chance, it agreed on about 44%, and the gate's verdict depended on the draw.)
SHUFFLED = Behaviour(0.0, 0.40)


class LiveTraffic:
    """Batches of frames recorded every `interval` seconds, as the batch path and serving record them."""

    def __init__(self, pool: DbPool, registry: ModelRegistry, behaviours: dict[str, Behaviour], frames: int = 40,
                 interval: float = 0.2, seed: int = 0) -> None:
        self.pool, self.registry, self.behaviours = pool, registry, behaviours
        self.frames, self.interval = frames, interval
        self.rng = random.Random(seed)
        self.by_version: dict[str, int] = {}

    def _answer(self, version: str, truth: str) -> tuple[str, float, bool]:
        b = self.behaviours.get(version, GOOD)
        label = truth if self.rng.random() < b.accuracy else self.rng.choice(CLASSES)
        return label, b.confidence, False

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

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LiveTraffic]:
        async def loop() -> None:
            while True:
                await self.record_batch()
                await asyncio.sleep(self.interval)  # the pace of a camera, not a synchronisation

        async with in_background(loop()):
            yield self
