"""DeletionWorkflow (issue 24): removes every copy and reference of the frames a deletion request names.

Plan (the frames go to a ledger table, once), abort the rollouts of models trained on them when the
request was forced, then chunks: each activity removes a bounded number of the ledger's frames (store
objects, rows, review tasks and their workflows) and commits its counts with the ledger's marks, so a
worker killed mid-chunk leaves a chunk that the next attempt does again, idempotently. Past
`chunks_per_run` chunks the run continues as new. Finishing rebuilds what was derived from the frames
(drift reports, snapshot and model records) and runs the verifier. `progress` answers at any time.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow

from workflows.deletion_types import (
    DELETION_WORKFLOW,
    PROGRESS_QUERY,
    AbortRolloutsInput,
    DeletionChunkInput,
    DeletionChunkResult,
    DeletionInput,
    DeletionPlan,
    DeletionProgress,
    FinishDeletionInput,
    PlanDeletionInput,
)
from workflows.policies import DB_RETRY, DB_TIMEOUT

# A chunk heartbeats as it goes: a worker killed mid-chunk has its chunk retried elsewhere within this.
CHUNK_HEARTBEAT = timedelta(seconds=15)
# Finishing runs the verifier, which walks every table and the store: long on a big deployment, heartbeating.
FINISH_TIMEOUT = timedelta(minutes=30)
FINISH_HEARTBEAT = timedelta(minutes=2)

with workflow.unsafe.imports_passed_through():
    from activities.deletion import DeletionActivities


@workflow.defn(name=DELETION_WORKFLOW)
class DeletionWorkflow:
    def __init__(self) -> None:
        self._progress: DeletionProgress | None = None

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> DeletionProgress:
        return self._progress or DeletionProgress(deletion_id=workflow.info().workflow_id)

    @workflow.run
    async def run(self, input: DeletionInput) -> DeletionProgress:
        self._progress = DeletionProgress(deletion_id=input.deletion_id,
                                          status="deleting" if input.planned else "planning")
        if not input.planned:
            plan: DeletionPlan = await workflow.execute_activity_method(
                DeletionActivities.plan_deletion, PlanDeletionInput(input.deletion_id, input.scope),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
            self._progress.frames_total = plan.frames_total
            if plan.rollouts and input.force:
                # The API refused without `force`; with it, the rollouts stop before their data goes.
                self._progress.aborted_rollouts = await workflow.execute_activity_method(
                    DeletionActivities.abort_rollouts,
                    AbortRolloutsInput(input.deletion_id, plan.rollouts, input.requested_by),
                    start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
            self._progress.status = "deleting"
            input = replace(input, planned=True)
        chunks = 0
        while True:
            result: DeletionChunkResult = await workflow.execute_activity_method(
                DeletionActivities.delete_chunk, DeletionChunkInput(input.deletion_id, input.chunk_size),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY, heartbeat_timeout=CHUNK_HEARTBEAT)
            self._progress = result.progress
            chunks += 1
            if result.remaining == 0:
                break
            if chunks >= input.chunks_per_run or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(replace(input, chunks_done=input.chunks_done + chunks))
        self._progress.status = "finishing"
        self._progress = await workflow.execute_activity_method(
            DeletionActivities.finish_deletion, FinishDeletionInput(input.deletion_id, input.requested_by),
            start_to_close_timeout=FINISH_TIMEOUT, heartbeat_timeout=FINISH_HEARTBEAT, retry_policy=DB_RETRY)
        return self._progress
