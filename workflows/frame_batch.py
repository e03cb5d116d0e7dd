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

        chunks = [input.frames[i : i + input.chunk_size] for i in range(0, len(input.frames), input.chunk_size)]
        results = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    BatchActivities.validate_frames,
                    ValidateFramesInput(input.batch_id, chunk),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=_DB_RETRY,
                )
                for chunk in chunks
            )
        )
        outcomes: list[FrameOutcome] = [o for r in results for o in r.outcomes]
        self._validated = len(outcomes)

        rejected = [o for o in outcomes if not o.accepted]
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
            frame_count=len(input.frames),
            accepted=len(outcomes) - len(rejected),
            rejected=len(rejected),
            rejections=rejected,
        )
