"""What the loop (drift checks, retraining) adds to the orchestration worker, and the Schedule that
starts drift checks. `workers.orchestration` registers LOOP_WORKFLOWS and `loop_activities(...)`; the
worker's start-up calls `ensure_drift_schedule` (idempotent: creates it, or updates its interval)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
)

from activities.drift import DriftActivities
from activities.retraining import RetrainingRecords
from activities.rollout import RolloutActivities
from infra.db import DbPool
from infra.log import get_logger
from infra.settings import Settings
from infra.stack_urls import database_url
from infra.store import ObjectStore
from vision.registry import ModelRegistry
from workers.schedules import ensure_schedule, every
from workflows.drift_check import DriftCheckWorkflow
from workflows.drift_types import SCHEDULE_ID, DriftCheckInput
from workflows.retraining import RetrainingWorkflow
from workflows.rollout import ModelRolloutWorkflow

log = get_logger(__name__)

LOOP_WORKFLOWS = [DriftCheckWorkflow, RetrainingWorkflow, ModelRolloutWorkflow]


def loop_activities(pool: DbPool, store: ObjectStore, settings: Settings,
                    registry: ModelRegistry | None = None) -> list[Callable[..., Any]]:
    """The drift, retraining-record and rollout activities of the orchestration task queue."""
    registry = registry or ModelRegistry(database_url(settings))
    drift = DriftActivities(pool, store, settings, registry)
    records = RetrainingRecords(pool, registry)
    rollout = RolloutActivities(pool, registry)
    return [rollout.begin_rollout, rollout.apply_stage, rollout.stage_metrics, rollout.record_rollout, rollout.promote,
            rollout.roll_back, rollout.skip_rollout_if_line_busy,
            # run_drift_check runs on the drift queue (workers.drift); it stays here for checks begun before.
            drift.drift_policy, drift.list_drift_sites, drift.run_drift_check, drift.retraining_readiness,
            drift.record_drift_decision,
            records.start_retraining_run, records.finish_retraining_run, records.hand_to_rollout]


def drift_schedule(settings: Settings) -> Schedule:
    return every(settings.drift_check_interval_s, DriftCheckWorkflow.run,
                 DriftCheckInput(site_id="", requested_by="schedule"),
                 workflow_id="drift-sweep", task_queue=settings.orchestration_task_queue)


async def ensure_drift_schedule(client: Client, settings: Settings) -> str:
    """Create the drift-check Schedule, or bring an existing one up to the settings (interval, task
    queue). Returns 'created', 'updated' or 'unchanged'."""

    def unchanged(current: Schedule) -> bool:
        intervals, action = current.spec.intervals, current.action
        return (len(intervals) == 1 and intervals[0].every == timedelta(seconds=settings.drift_check_interval_s)
                and isinstance(action, ScheduleActionStartWorkflow)
                and action.task_queue == settings.orchestration_task_queue)

    outcome = await ensure_schedule(client, SCHEDULE_ID, drift_schedule(settings), unchanged)
    if outcome != "unchanged":
        log.info(f"drift schedule {outcome}", every_s=settings.drift_check_interval_s)
    return outcome
