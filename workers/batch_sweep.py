"""The Schedule of the stale-batch sweep (workflows/batch_sweep.py): created at the worker's start, or
brought up to the settings (interval, threshold, task queue) when they changed."""

from __future__ import annotations

from temporalio.client import Client, Schedule

from infra.log import get_logger
from infra.settings import Settings
from workers.schedules import ensure_schedule, every
from workflows.batch_sweep import StaleBatchSweepWorkflow
from workflows.batch_sweep_types import SCHEDULE_ID, BatchSweepInput

log = get_logger(__name__)


def batch_sweep_schedule(settings: Settings) -> Schedule:
    return every(settings.stale_batch_sweep_interval_s, StaleBatchSweepWorkflow.run,
                 BatchSweepInput(older_than_s=settings.stale_batch_after_s),
                 workflow_id="stale-batch-sweep", task_queue=settings.orchestration_task_queue)


async def ensure_batch_sweep_schedule(client: Client, settings: Settings) -> str:
    """'created' or 'updated' (every start gives the Schedule today's settings)."""
    outcome = await ensure_schedule(client, SCHEDULE_ID, batch_sweep_schedule(settings))
    log.info("stale-batch sweep scheduled", outcome=outcome, every_s=settings.stale_batch_sweep_interval_s)
    return outcome
