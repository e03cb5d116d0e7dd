"""The activities of the steps FrameBatchWorkflow took before the durable path: record a batch,
validate (decode) its frames, classify them, record the predictions, complete the batch. Registered
only so batches started on that code finish; removed with workflows/frame_batch_legacy.py.

Every write is an upsert keyed by batch or frame id, so retries leave exactly the rows one run would.
"""

from __future__ import annotations

import asyncio

import psycopg
from temporalio import activity

from activities.batch_records import new_frame_rows
from activities.inference import serving_failure
from infra.db import DbPool
from infra.log import get_logger
from infra.store import ObjectNotFoundError, ObjectStore, sha256_hex
from infra.tables import batches, frame_routes, frames, predictions
from serving.client import ServingClient, ServingError
from vision.decode import FrameRejected, decode_frame
from workflows.batch_types import FrameOutcome
from workflows.failures import RecordFailure
from workflows.legacy_batch_types import (
    ClassifyFramesInput,
    ClassifyFramesResult,
    CompleteBatchInput,
    FramePrediction,
    FrameRef,
    RecordBatchInput,
    RecordPredictionsInput,
    ValidateFramesInput,
    ValidateFramesResult,
)

log = get_logger(__name__)


def _r4(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in values.items()}


class LegacyBatchActivities:
    def __init__(self, pool: DbPool, store: ObjectStore, serving: ServingClient | None = None,
                 max_frame_pixels: int = 12_000_000) -> None:
        self.pool = pool
        self.store = store
        self.serving = serving
        self.max_frame_pixels = max_frame_pixels

    @activity.defn
    async def record_batch(self, input: RecordBatchInput) -> None:
        new_frames = new_frame_rows(input.batch_id, input.frames)
        async with self.pool.connection() as conn, conn.transaction():
            await batches.record_running(conn, batch_id=input.batch_id, camera_id=input.camera_id,
                                         site_id=input.site_id, frame_count=len(input.frames), run_id=input.run_id)
            await frames.insert(conn, input.batch_id, new_frames)
        log.info("batch recorded", batch_id=input.batch_id, frames=len(input.frames))

    @activity.defn
    async def validate_frames(self, input: ValidateFramesInput) -> ValidateFramesResult:
        async with self.pool.connection() as conn:
            rows = await frames.in_positions(conn, input.batch_id, input.start, input.end)
        result = ValidateFramesResult()
        outcomes: list[frames.Validation] = []
        for row in rows:
            frame_id, key = row["frame_id"], row["object_key"]
            digest = ""
            try:
                data = await asyncio.to_thread(self.store.get, key)
                digest = sha256_hex(data)
                decoded = await asyncio.to_thread(decode_frame, data, self.max_frame_pixels)
            except (ObjectNotFoundError, FrameRejected) as exc:
                reason = str(exc) if isinstance(exc, FrameRejected) else "frame missing from the object store"
                result.rejected.append(FrameOutcome(frame_id, False, reason))
                outcomes.append(frames.Validation(frame_id, False, digest, reason))
            else:
                result.accepted.append(FrameRef(frame_id, key))
                outcomes.append(frames.Validation(frame_id, True, digest, None, decoded.width, decoded.height,
                                                  decoded.format))
            activity.heartbeat(len(outcomes))
        async with self.pool.connection() as conn:
            await frames.record_validation(conn, outcomes)
        log.info("frames validated", batch_id=input.batch_id, frames=len(outcomes), rejected=len(result.rejected))
        return result

    @activity.defn
    async def complete_batch(self, input: CompleteBatchInput) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await frames.reject(conn, [(o.frame_id, o.reason) for o in input.rejected])
            await frame_routes.upsert(conn, [frame_routes.Route(r.frame_id, r.route, r.reason, r.workflow_id)
                                             for r in input.routes])
            await batches.complete(conn, batch_id=input.batch_id, status=input.status,
                                   model_version=input.model_version)
        log.info("batch completed", batch_id=input.batch_id, status=input.status, routes=len(input.routes))

    @activity.defn
    async def record_predictions(self, input: RecordPredictionsInput) -> int:
        """Returns the number of predictions written (inserted or updated in place)."""
        if not input.predictions:
            return 0
        rows = [predictions.NewPrediction(p.frame_id, p.model_version, p.label, p.confidence, p.probabilities,
                                          p.quality, p.timings)
                for p in input.predictions]
        try:
            async with self.pool.connection() as conn:
                await predictions.upsert(conn, rows)
        except psycopg.errors.ForeignKeyViolation as exc:
            # A prediction for a frame that was never recorded is a bug upstream, not a transient fault.
            raise RecordFailure.UNKNOWN_FRAME.error(f"prediction for an unknown frame: {exc}") from exc
        log.info("predictions recorded", batch_id=input.batch_id, count=len(rows))
        return len(rows)

    @activity.defn
    async def classify_frames(self, input: ClassifyFramesInput) -> ClassifyFramesResult:
        if not input.frames:
            return ClassifyFramesResult(model_version="", predictions=[], rejections=[])
        assert self.serving is not None, "the inference worker passes its serving client"
        try:
            response = await self.serving.classify([(f.frame_id, f.object_key) for f in input.frames],
                                                   input.model_alias)
        except ServingError as exc:
            raise serving_failure(exc, input.batch_id) from exc
        version = response.model_version
        predictions = [
            FramePrediction(frame_id=p.frame_id, label=p.label, confidence=round(p.confidence, 4),
                            probabilities=_r4(p.probabilities), quality=_r4(p.quality), model_version=version,
                            timings=_r4({k: v for k, v in p.timings.items() if k in ("preprocess_ms", "infer_ms")}))
            for p in response.predictions
        ]
        rejections = [FrameOutcome(frame_id=r.frame_id, accepted=False, reason=r.reason) for r in response.rejections]
        log.info("frames classified", batch_id=input.batch_id, model_version=version, predictions=len(predictions),
                 rejections=len(rejections), total_ms=response.timings.get("total_ms"))
        return ClassifyFramesResult(model_version=version, predictions=predictions, rejections=rejections)
