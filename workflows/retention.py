"""RetentionWorkflow (issue 24), run by a Temporal Schedule: removes what outlived its site's retention
period, kind by kind (review tasks, predictions, frames, drift reports), a bounded chunk per activity,
each chunk audited with its counts. Frames a registered model that is not retired was trained on are
held (lineage wins over age). Past `chunks_per_run` chunks a run continues as new with what it carried.
Idempotent: a chunk removes what is expired at the run's start time, and a retried one finds less.
"""

from __future__ import annotations

from dataclasses import replace

from temporalio import workflow

from workflows.deletion_types import (
    RETENTION_KINDS,
    RETENTION_WORKFLOW,
    RetentionChunkInput,
    RetentionChunkResult,
    RetentionInput,
    RetentionResult,
)
from workflows.policies import DB_RETRY, DB_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.retention import RetentionActivities


@workflow.defn(name=RETENTION_WORKFLOW)
class RetentionWorkflow:
    @workflow.run
    async def run(self, input: RetentionInput) -> RetentionResult:
        now = workflow.now().isoformat()
        removed = dict(input.removed)
        chunks = 0
        kind_index = input.kind_index
        while kind_index < len(RETENTION_KINDS):
            kind = RETENTION_KINDS[kind_index]
            chunk = f"{workflow.info().run_id}:{chunks}"
            result: RetentionChunkResult = await workflow.execute_activity_method(
                RetentionActivities.expire_chunk, RetentionChunkInput(kind, now, input.chunk_size, chunk),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
            removed[kind] = removed.get(kind, 0) + result.removed
            chunks += 1
            if result.removed < input.chunk_size:
                kind_index += 1  # nothing more of this kind expired
            if kind_index < len(RETENTION_KINDS) and chunks >= input.chunks_per_run:
                workflow.continue_as_new(replace(input, kind_index=kind_index,
                                                 chunks_done=input.chunks_done + chunks, removed=removed))
        return RetentionResult(removed)
