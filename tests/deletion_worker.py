"""`python -m tests.deletion_worker`: a worker process running only deletions (the DeletionWorkflow and its
activities) on the task queue of SIGHTLINE_ORCHESTRATION_TASK_QUEUE, so a test can SIGKILL it mid-deletion
without the cost of the whole `workers.main` (serving, training, drift)."""

from __future__ import annotations

import asyncio

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.deletion import DeletionActivities
from infra.db import open_pool
from infra.settings import get_settings
from infra.store import store_from_settings
from infra.temporal import connect
from workflows.deletion import DeletionWorkflow

# The orchestration worker's runner (workers.orchestration), built here: importing that module loads every
# workflow's activities (torch among them), which would cost this process tens of seconds under load.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows"))


async def main() -> None:
    settings = get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    async with open_pool(settings.database_url) as pool:
        activities = DeletionActivities(pool, store_from_settings(settings), client)
        worker = Worker(client, task_queue=settings.orchestration_task_queue, workflows=[DeletionWorkflow],
                        activities=[activities.plan_deletion, activities.abort_rollouts, activities.delete_chunk,
                                    activities.finish_deletion],
                        workflow_runner=WORKFLOW_RUNNER, max_concurrent_activities=1)
        print("deletion worker polling", flush=True)
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
