"""The batch's own short writes, run as local activities by FrameBatchWorkflow (inside its workflow
task, with no scheduling round trip and one marker event each): recording a camera stream's frames,
and closing the batch with its routes and totals.

Every write is keyed by batch or frame id, so a retried activity, or one replayed after a worker was
killed mid-batch, leaves exactly the rows a single run would.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.tables import batches, frame_routes, frames
from workflows.batch_types import CloseBatchInput, RecordFramesInput, SubmittedFrame, make_frame_id

log = get_logger(__name__)


def new_frame_rows(batch_id: str, uploaded: Sequence[SubmittedFrame]) -> list[frames.NewFrame]:
    """The frame rows of a batch's uploads, in upload order (their ids follow their positions)."""
    return [frames.NewFrame(make_frame_id(batch_id, position), position, f.object_key, f.filename, f.content_type,
                            f.size_bytes)
            for position, f in enumerate(uploaded)]


class BatchActivities:
    def __init__(self, pool: DbPool) -> None:
        self.pool = pool

    @activity.defn
    async def record_frames(self, input: RecordFramesInput) -> None:
        new_frames = new_frame_rows(input.batch_id, input.frames)
        async with self.pool.connection() as conn, conn.transaction():
            await batches.record_running(conn, batch_id=input.batch_id, camera_id=input.camera_id,
                                         site_id=input.site_id, frame_count=len(input.frames),
                                         run_id=activity.info().workflow_run_id)
            await frames.insert(conn, input.batch_id, new_frames)
        log.info("frames recorded", batch_id=input.batch_id, frames=len(input.frames))

    @activity.defn
    async def close_batch(self, input: CloseBatchInput) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await frame_routes.upsert(conn, [frame_routes.Route(r.frame_id, r.route, r.reason, r.workflow_id)
                                             for r in input.routes])
            await batches.complete(conn, batch_id=input.batch_id, status=input.status,
                                   model_version=input.model_version, failure=input.failure)
        log.info("batch closed", batch_id=input.batch_id, status=input.status, routes=len(input.routes))
