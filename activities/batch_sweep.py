"""The stale-batch sweep's one activity: every batch still 'received' past the threshold is started (its
frames are in the store: the request that recorded it died before its workflow started) or released (a
frame is missing: it can never run; resubmitting the request runs it again). Starting is idempotent: a
batch whose workflow is queued or running already is left as it is."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from infra.db import DbPool, Row
from infra.log import get_logger
from infra.settings import Settings
from infra.store import ObjectStore
from infra.tables import batches, frames
from workflows.batch_start import batch_input, start_options
from workflows.batch_sweep_types import BatchSweepInput, BatchSweepResult
from workflows.batch_types import WORKFLOW_NAME

log = get_logger(__name__)

RELEASED = ("released by the stale-batch sweep: some of its frames were never stored (the request that "
            "recorded it failed); submit it again with the same idempotency key")


class BatchSweepActivities:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    @activity.defn
    async def sweep_stale_batches(self, input: BatchSweepInput) -> BatchSweepResult:
        async with self.pool.connection() as conn:
            stale = await batches.stale_received(conn, input.older_than_s, input.limit)
        result = BatchSweepResult()
        for row in stale:
            activity.heartbeat(row["batch_id"])
            if await self._frames_stored(row):
                await self._start(row)
                result.started.append(row["batch_id"])
            elif not await self._running(row["batch_id"]):
                async with self.pool.connection() as conn:
                    if await batches.release(conn, row["batch_id"], RELEASED):
                        result.released.append(row["batch_id"])
        if stale:
            log.info("stale batches swept", started=len(result.started), released=len(result.released))
        return result

    async def _frames_stored(self, row: Row) -> bool:
        async with self.pool.connection() as conn:
            keys = await frames.object_keys(conn, row["batch_id"])
        if len(keys) != row["frame_count"]:
            return False

        def all_there() -> bool:
            return all(self.store.exists(key) for key in keys)

        return await asyncio.to_thread(all_there)

    async def _start(self, row: Row) -> None:
        batch_id, camera_id, site_id = row["batch_id"], row["camera_id"], row["site_id"]
        await self.temporal.start_workflow(
            WORKFLOW_NAME,
            batch_input(self.settings, batch_id, camera_id, site_id, [], row["webhook_url"], row["frame_count"],
                        row.get("model")),
            **start_options(batch_id, camera_id, site_id, self.settings.orchestration_task_queue),
        )
        async with self.pool.connection() as conn:
            await batches.touch(conn, batch_id)
        log.info("stale batch started", batch_id=batch_id)

    async def _running(self, batch_id: str) -> bool:
        try:
            described = await self.temporal.get_workflow_handle(batch_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return described.status == WorkflowExecutionStatus.RUNNING
