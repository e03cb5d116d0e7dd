"""The Schedule of the RetentionWorkflow (workflows/retention.py): created at the worker's start, or
brought up to the settings (interval, chunk sizes, task queue) when they changed."""

from __future__ import annotations

from temporalio.client import Client, Schedule

from infra.log import get_logger
from infra.settings import Settings
from workers.schedules import ensure_schedule, every
from workflows.deletion_types import RETENTION_SCHEDULE_ID, RetentionInput
from workflows.retention import RetentionWorkflow

log = get_logger(__name__)


def retention_schedule(settings: Settings) -> Schedule:
    return every(settings.retention_interval_s, RetentionWorkflow.run,
                 RetentionInput(chunk_size=settings.retention_chunk_size,
                                chunks_per_run=settings.retention_chunks_per_run),
                 workflow_id=RETENTION_SCHEDULE_ID, task_queue=settings.orchestration_task_queue)


async def ensure_retention_schedule(client: Client, settings: Settings) -> str:
    """'created' or 'updated' (every start gives the Schedule today's settings)."""
    outcome = await ensure_schedule(client, RETENTION_SCHEDULE_ID, retention_schedule(settings))
    log.info("retention scheduled", outcome=outcome, every_s=settings.retention_interval_s)
    return outcome
