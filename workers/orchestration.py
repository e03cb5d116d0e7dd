"""The orchestration worker: workflows plus the Postgres and object-store activities."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.worker import Worker

from activities.batch_records import BatchActivities
from infra.settings import Settings
from infra.store import ObjectStore
from workflows.frame_batch import FrameBatchWorkflow

WORKFLOWS = [FrameBatchWorkflow]


def orchestration_worker(client: Client, pool: AsyncConnectionPool, store: ObjectStore, settings: Settings) -> Worker:
    batches = BatchActivities(pool, store, settings.max_frame_pixels)
    return Worker(
        client,
        task_queue=settings.orchestration_task_queue,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        workflows=WORKFLOWS,
        activities=[batches.record_batch, batches.validate_frames, batches.complete_batch],
    )
