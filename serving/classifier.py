"""The classifier deployment of the pair layout (serving.app): holds the model versions it was asked for
(serving.models: verified when loaded), and batches the frames of concurrent requests into shared forward
passes with `@serve.batch`. Each pass answers logits and, for versions calibrated for it, every frame's
novelty score. The layout for a classifier on a GPU, where a long shared pass is what the device wants."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from infra.log import get_logger
from serving.config import ServingConfig
from serving.messages import Classification, ModelDescription, ResolvedModel
from serving.models import ModelSet

log = get_logger(__name__)

# Frames per forward pass, and how long a pass waits for more; the application sets both through
# user_config (serving.app.AppOptions), which reaches running replicas without a restart.
MAX_BATCH_SIZE = 64
BATCH_WAIT_TIMEOUT_S = 0.005


@dataclass(frozen=True)
class QueuedFrames:
    """What one request (or a slice of a large one) puts in the batch queue."""

    version: str
    pixels: np.ndarray  # uint8 NHWC


def _frames_in(queued: list[QueuedFrames]) -> int:
    return sum(len(item.pixels) for item in queued)


@serve.deployment(max_ongoing_requests=256)
class Classifier:
    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.holder = ModelSet(config, config.backend, config.backend_threads)
        self.holder.preload()
        self.models = self.holder.models
        self.max_batch_size = MAX_BATCH_SIZE

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batch size (frames per forward pass) and wait, tunable at runtime without a restart."""
        self.max_batch_size = int(user_config.get("max_batch_size", MAX_BATCH_SIZE))
        wait_s = float(user_config.get("batch_wait_timeout_s", BATCH_WAIT_TIMEOUT_S))
        # Ray's stub types the batching wrapper as a bare callable; it does carry these setters.
        self._batched.set_max_batch_size(self.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]

    async def describe(self, ref: str) -> ResolvedModel:
        """Resolve an alias or version, load it if needed (sha256-verified), and say how to feed it."""
        return await asyncio.to_thread(self.holder.describe, ref)

    async def loaded(self) -> list[ModelDescription]:
        return self.holder.loaded()

    async def classify(self, version: str, pixels: np.ndarray) -> Classification:
        """uint8 NHWC pixels of one request -> a decision per frame, in order."""
        if version not in self.models:
            await self.describe(version)
        # One request may hold more frames than a batch: split it; the pieces batch with other requests.
        step = max(1, self.max_batch_size)
        parts = await asyncio.gather(*(self._batched(QueuedFrames(version, pixels[i : i + step]))
                                       for i in range(0, len(pixels), step)))
        return Classification(version=version, backend=self.models[version].backend.name,
                              decisions=[d for part in parts for d in part.decisions],
                              infer_ms=round(sum(p.infer_ms for p in parts), 2),
                              batch_frames=max(p.batch_frames for p in parts))

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S, batch_size_fn=_frames_in)
    async def _batched(self, queued: list[QueuedFrames]) -> list[Classification]:
        answers: dict[int, Classification] = {}
        by_version: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(queued):
            by_version[item.version].append(i)
        for version, idxs in by_version.items():
            model = self.models[version]
            batch = np.concatenate([queued[i].pixels for i in idxs])
            started = time.perf_counter()
            # Off the event loop, so requests keep queueing into the next batch while this one runs.
            if model.detects:  # a detection version: boxes per frame, decided from the same one pass
                decisions = await asyncio.to_thread(model.detect, batch)
            else:
                logits, novelty = await asyncio.to_thread(model.backend.scores, batch)
                decisions = model.manifest.processing.decide(logits, novelty)
            infer_ms = (time.perf_counter() - started) * 1000
            offset = 0
            for i in idxs:
                n = len(queued[i].pixels)
                answers[i] = Classification(version, model.backend.name, decisions[offset : offset + n], infer_ms,
                                            len(batch))
                offset += n
        return [answers[i] for i in range(len(queued))]
