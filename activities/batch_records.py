"""Activities that record a frame batch in Postgres and validate its frames from the object store.

Every write is an upsert keyed by batch or frame id, so a retried activity, or one replayed after a
worker was killed mid-batch, leaves exactly the rows a single run would.
"""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from infra.log import get_logger
from infra.store import ObjectNotFoundError, ObjectStore, sha256_hex
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
    def __init__(self, pool: AsyncConnectionPool, store: ObjectStore, max_frame_pixels: int = 40_000_000) -> None:
        self.pool = pool
        self.store = store
        self.max_frame_pixels = max_frame_pixels

    @activity.defn
    async def record_batch(self, input: RecordBatchInput) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count, run_id,
                                     started_at)
                VALUES (%s, %s, %s, %s, 'running', %s, %s, now())
                ON CONFLICT (batch_id) DO UPDATE
                   SET status = CASE WHEN batches.status = 'received' THEN 'running' ELSE batches.status END,
                       run_id = EXCLUDED.run_id, updated_at = now(),
                       started_at = coalesce(batches.started_at, now())
                """,
                (input.batch_id, input.camera_id, input.site_id, input.batch_id, len(input.frames), input.run_id),
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    """
                    INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, filename, content_type, size_bytes)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (frame_id) DO NOTHING
                    """,
                    [
                        (make_frame_id(input.batch_id, position), input.batch_id, position, f.object_key,
                         "", f.filename, f.content_type, f.size_bytes)
                        for position, f in enumerate(input.frames)
                    ],
                )
        log.info("batch recorded", batch_id=input.batch_id, frames=len(input.frames))

    @activity.defn
    async def validate_frames(self, input: ValidateFramesInput) -> ValidateFramesResult:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT frame_id, object_key FROM frames WHERE batch_id = %s AND position >= %s AND position < %s"
                " ORDER BY position",
                (input.batch_id, input.start, input.end),
            )
            frames = await cur.fetchall()
        result = ValidateFramesResult()
        rows = []
        for frame in frames:
            digest = ""
            try:
                data = await asyncio.to_thread(self.store.get, frame["object_key"])
                digest = sha256_hex(data)
                decoded = await asyncio.to_thread(decode_frame, data, self.max_frame_pixels)
            except (ObjectNotFoundError, FrameRejected) as exc:
                reason = str(exc) if isinstance(exc, FrameRejected) else "frame missing from the object store"
                result.rejected.append(FrameOutcome(frame["frame_id"], False, reason))
                rows.append(("rejected", reason, None, None, None, digest, frame["frame_id"]))
            else:
                result.accepted.append(FrameRef(frame["frame_id"], frame["object_key"]))
                rows.append(("accepted", None, decoded.width, decoded.height, decoded.format, digest,
                             frame["frame_id"]))
            activity.heartbeat(len(rows))
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                """
                UPDATE frames SET status = %s, reject_reason = %s, width = %s, height = %s, image_format = %s,
                                  sha256 = %s, updated_at = now()
                 WHERE frame_id = %s
                """,
                rows,
            )
        log.info("frames validated", batch_id=input.batch_id, frames=len(rows), rejected=len(result.rejected))
        return result

    @activity.defn
    async def complete_batch(self, input: CompleteBatchInput) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE frames SET status = 'rejected', reject_reason = %s, updated_at = now() WHERE frame_id = %s",
                    [(o.reason, o.frame_id) for o in input.rejected],
                )
                await cur.executemany(
                    """
                    INSERT INTO frame_routes (frame_id, route, reason, workflow_id) VALUES (%s, %s, %s, %s)
                    ON CONFLICT (frame_id, route) DO UPDATE SET reason = EXCLUDED.reason,
                                                                workflow_id = EXCLUDED.workflow_id
                    """,
                    [(r.frame_id, r.route, r.reason, r.workflow_id) for r in input.routes],
                )
            # Totals are derived from the rows, so a retry recomputes the same numbers.
            await conn.execute(
                """
                UPDATE batches b SET status = %(status)s, model_version = %(model)s,
                       completed_at = coalesce(b.completed_at, now()), updated_at = now(),
                       accepted_count = (SELECT count(*) FROM frames f WHERE f.batch_id = b.batch_id AND f.status = 'accepted'),
                       rejected_count = (SELECT count(*) FROM frames f WHERE f.batch_id = b.batch_id AND f.status = 'rejected'),
                       sent_to_review = (SELECT count(*) FROM frame_routes r JOIN frames f USING (frame_id)
                                          WHERE f.batch_id = b.batch_id AND r.route = 'review'),
                       defect_count = (SELECT count(*) FROM frame_routes r JOIN frames f USING (frame_id)
                                        WHERE f.batch_id = b.batch_id AND r.route = 'alert'),
                       label_counts = coalesce((SELECT jsonb_object_agg(label, n) FROM (
                                          SELECT p.label, count(*) AS n FROM predictions p JOIN frames f USING (frame_id)
                                           WHERE f.batch_id = b.batch_id AND p.model_version = %(model)s
                                             AND f.status = 'accepted'
                                           GROUP BY p.label) counts), '{}'::jsonb)
                 WHERE batch_id = %(batch)s
                """,
                {"status": input.status, "model": input.model_version, "batch": input.batch_id},
            )
        log.info("batch completed", batch_id=input.batch_id, status=input.status, routes=len(input.routes))
