"""Activities that record a frame batch in Postgres and validate its frames from the object store.

Every write is an upsert keyed by batch or frame id, so a retried activity, or one replayed after a
worker was killed mid-batch, leaves exactly the rows a single run would.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.store import ObjectNotFoundError, ObjectStore, sha256_hex
from infra.tables import batches, frame_routes, frames
from vision.decode import FrameRejected, decode_frame
from workflows.batch_types import (
    CompleteBatchInput,
    FrameOutcome,
    FrameRef,
    RecordBatchInput,
    ValidateFramesInput,
    ValidateFramesResult,
    make_frame_id,
)

log = get_logger(__name__)


class BatchActivities:
    def __init__(self, pool: DbPool, store: ObjectStore, max_frame_pixels: int = 40_000_000) -> None:
        self.pool = pool
        self.store = store
        self.max_frame_pixels = max_frame_pixels

    @activity.defn
    async def record_batch(self, input: RecordBatchInput) -> None:
        new_frames = [frames.NewFrame(make_frame_id(input.batch_id, position), position, f.object_key, f.filename,
                                      f.content_type, f.size_bytes)
                      for position, f in enumerate(input.frames)]
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
