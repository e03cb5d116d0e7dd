"""The least a durable batch can cost Temporal: a workflow that runs one activity that does nothing, in
each shape a batch could take.

bench/ingest.py runs a few hundred of these on the stack's own Temporal server, with a worker in the
benchmark's process, and reads the CPU the server and the SDK spent on each. No design that makes
every batch a workflow with its classification in an activity can spend less; the benchmark uses it
to say how far the goals sit from what is reachable on this machine at all.

The shapes (`SHAPES`): `activity`, one activity on the workflow's own task queue (the floor the
benchmark has always printed); `remote`, the activity on another task queue, as a batch's
classification runs on the inference queue; `local`, a local activity (no activity task at all: one
marker in the workflow's first task); and `eager`, the remote shape started eagerly, the first workflow
task handed back to the starting process's worker in the start's own answer (the dev server needs
`system.enableEagerWorkflowStart`, which the local stack sets).

Its own module: Temporal's sandbox re-imports the module that defines a workflow, and this one
imports nothing but the SDK.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

SHAPES = ("activity", "remote", "local", "eager")


@activity.defn(name="bench_noop")
async def noop(batch_id: str) -> str:
    return batch_id


@workflow.defn(name="BenchMinimalBatch")
class MinimalBatchWorkflow:
    """`activity_queue` empty: the activity on the workflow's own queue; `local`: a local activity."""

    @workflow.run
    async def run(self, batch_id: str, activity_queue: str = "", local: bool = False) -> str:
        if local:
            return await workflow.execute_local_activity(noop, batch_id, start_to_close_timeout=timedelta(seconds=30))
        return await workflow.execute_activity(noop, batch_id, task_queue=activity_queue or None,
                                               start_to_close_timeout=timedelta(seconds=30))
