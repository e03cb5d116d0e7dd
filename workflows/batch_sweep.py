"""StaleBatchSweepWorkflow, run by a Temporal Schedule: batches the API recorded but whose workflow never
started (Temporal away, the API killed between the two) are started, or released when they can never run,
so no such batch holds one of its site's admission slots for good.

One activity does the sweep, a bounded number of batches per run: the work is a handful of reads and
idempotent starts, and a sweep that finds nothing is two events more than an empty run.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.batch_sweep_types import WORKFLOW_NAME, BatchSweepInput, BatchSweepResult
from workflows.policies import DB_RETRY, DB_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from activities.batch_sweep import BatchSweepActivities

@workflow.defn(name=WORKFLOW_NAME)
class StaleBatchSweepWorkflow:
    @workflow.run
    async def run(self, input: BatchSweepInput) -> BatchSweepResult:
        result: BatchSweepResult = await workflow.execute_activity_method(
            BatchSweepActivities.sweep_stale_batches, input, start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY)
        return result
