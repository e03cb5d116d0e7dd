"""The Schedule of the stale-batch sweep (workflows/batch_sweep.py): created at the worker's start, or
brought up to the settings (interval, threshold, task queue) when they changed."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from infra.log import get_logger
from infra.settings import Settings
from workers.schedules import ensure_schedule
from workflows.batch_sweep import StaleBatchSweepWorkflow
from workflows.batch_sweep_types import SCHEDULE_ID, BatchSweepInput

log = get_logger(__name__)


def batch_sweep_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            StaleBatchSweepWorkflow.run, BatchSweepInput(older_than_s=settings.stale_batch_after_s),
            id="stale-batch-sweep", task_queue=settings.orchestration_task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(
            every=timedelta(seconds=settings.stale_batch_sweep_interval_s))]),
        # A sweep still running when the next is due: skip that one, never pile them up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_batch_sweep_schedule(client: Client, settings: Settings) -> str:
    """'created' or 'updated' (every start gives the Schedule today's settings)."""
    outcome = await ensure_schedule(client, SCHEDULE_ID, batch_sweep_schedule(settings))
    log.info("stale-batch sweep scheduled", outcome=outcome, every_s=settings.stale_batch_sweep_interval_s)
    return outcome
