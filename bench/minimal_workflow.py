"""The least a durable batch can cost Temporal: a workflow that runs one activity that does nothing.

bench/ingest.py runs a few hundred of these on the stack's own Temporal server, with a worker in the
benchmark's process, and reads the CPU the server and the SDK spent on each. No design that makes
every batch a workflow with its classification in an activity can spend less; the benchmark uses it
to say how far the goals sit from what is reachable on this machine at all.

Its own module: Temporal's sandbox re-imports the module that defines a workflow, and this one
imports nothing but the SDK.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(batch_id: str) -> str:
    return batch_id


@workflow.defn(name="BenchMinimalBatch")
class MinimalBatchWorkflow:
    @workflow.run
    async def run(self, batch_id: str) -> str:
        return await workflow.execute_activity(noop, batch_id, start_to_close_timeout=timedelta(seconds=30))
