"""FrameBatchWorkflow: record a batch, validate and decode its frames in chunks, and close it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows import search_attributes as sa
from workflows.batch_types import (
    BatchProgress,
    CompleteBatchInput,
    FrameBatchInput,
    FrameBatchResult,
    FrameOutcome,
    FrameRef,
    RecordBatchInput,
    ValidateFramesInput,
)

with workflow.unsafe.imports_passed_through():
    from activities.batch_records import BatchActivities

_DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn
class FrameBatchWorkflow:
    def __init__(self) -> None:
        self._status = "received"
        self._total = 0
        self._validated = 0

    @workflow.query
    def progress(self) -> BatchProgress:
        return BatchProgress(self._status, self._total, self._validated)

    def _set_status(self, status: str) -> None:
        self._status = status
        workflow.upsert_search_attributes([sa.STATUS.value_set(status)])

    @workflow.run
    async def run(self, input: FrameBatchInput) -> FrameBatchResult:
        self._total = len(input.frames)
        self._set_status("running")
        await workflow.execute_activity_method(
            BatchActivities.record_batch,
            RecordBatchInput(input.batch_id, input.camera_id, input.site_id, workflow.info().run_id, input.frames),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_DB_RETRY,
        )

        total = len(input.frames)
        results = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    BatchActivities.validate_frames,
                    ValidateFramesInput(input.batch_id, start, min(start + input.chunk_size, total)),
                    start_to_close_timeout=timedelta(minutes=5),
                    # A killed worker's chunk is retried after this, not after the whole timeout.
                    heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=_DB_RETRY,
                )
                for start in range(0, total, input.chunk_size)
            )
        )
        accepted: list[FrameRef] = [f for r in results for f in r.accepted]
        rejected: list[FrameOutcome] = [o for r in results for o in r.rejected]
        self._validated = len(accepted) + len(rejected)

        await workflow.execute_activity_method(
            BatchActivities.complete_batch,
            CompleteBatchInput(input.batch_id, "completed"),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_DB_RETRY,
        )
        self._set_status("completed")
        return FrameBatchResult(
            batch_id=input.batch_id,
            status="completed",
            frame_count=total,
            accepted=len(accepted),
            rejected=len(rejected),
            rejections=rejected,
        )
