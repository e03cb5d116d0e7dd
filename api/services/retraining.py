"""Retraining as the API and `sightline retrain` offer it: trigger a run for the snapshot of every
label reviewed so far (a second trigger for the same snapshot starts nothing), follow it (its row and
its workflow's `progress` query), cancel it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.audit import record_audit
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.store import ObjectStore
from infra.tables import retraining_runs
from infra.tables.api_keys import Principal
from vision.datasets import plan_snapshot
from vision.profiles import PROFILES
from workflows.retraining_types import (
    PROGRESS_QUERY,
    WORKFLOW_NAME,
    RetrainingInput,
    RetrainingProgress,
    RetrainingTrigger,
    SnapshotPlan,
    TrainingParams,
    retraining_workflow_id,
)
from workflows.rollout_types import plan_from


class RunNotFound(LookupError):
    pass


@dataclass
class Triggered:
    workflow_id: str
    snapshot_id: str
    reviewed_frames: int
    started: bool  # False: a run for this snapshot exists already, and nothing was started
    left_out: int = 0  # reviewed frames whose image is gone from the store, or labelled with no class


def default_params(settings: Settings) -> TrainingParams:
    return TrainingParams(profile=settings.retraining_profile, epochs=settings.retraining_epochs,
                          reviewed_share=settings.retraining_reviewed_share,
                          reviewed_holdout_pct=settings.retraining_reviewed_holdout_pct)


class RetrainingService:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    async def trigger(self, overrides: dict[str, Any], trigger: RetrainingTrigger,
                      caller: Principal | None = None) -> Triggered:
        """Start a run on the base set and every label reviewed until now. Its id names the snapshot,
        so a second trigger before any new label finds the first run and starts nothing."""
        params = replace(default_params(self.settings), **overrides)
        if params.profile not in PROFILES:
            raise ValueError(f"unknown profile {params.profile!r}: choose one of {', '.join(PROFILES)}")
        until = datetime.now(UTC)
        async with self.pool.connection() as conn:
            request, key, left_out = await plan_snapshot(conn, self.store, PROFILES[params.profile].base_set(),
                                                         params.reviewed_holdout_pct, until)
        plan = SnapshotPlan(request.snapshot_id, key, until.isoformat(), len(request.reviewed))
        workflow_id = retraining_workflow_id(plan.snapshot_id)
        s = self.settings
        started = True
        try:
            await self.temporal.start_workflow(
                WORKFLOW_NAME,
                RetrainingInput(plan, params, trigger, s.retraining_min_improvement, s.training_task_queue,
                                s.training_heartbeat_timeout_s, s.training_timeout_s,
                                plan_from("", s.rollout_defaults(), trigger.requested_by)
                                if s.retraining_auto_rollout else None),
                id=workflow_id, task_queue=s.orchestration_task_queue,
                # A snapshot trained once is not trained again; a failed or cancelled run may be retried.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            started = False
        if caller is not None:
            async with self.pool.connection() as conn:
                await record_audit(conn, caller, "retraining.start", f"retraining/{workflow_id}",
                                   workflow_id=workflow_id,
                                   details={"started": started, "snapshot_id": plan.snapshot_id,
                                            "reviewed_frames": plan.reviewed_frames, "left_out": left_out,
                                            "params": asdict(params),
                                            "note": trigger.note})
        return Triggered(workflow_id, plan.snapshot_id, plan.reviewed_frames, started, left_out)

    async def _described(self, workflow_id: str) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
        handle = self.temporal.get_workflow_handle(workflow_id)
        try:
            return handle, await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(f"no retraining run {workflow_id!r}") from None
            raise

    async def progress(self, workflow_id: str) -> tuple[str, RetrainingProgress | None]:
        """The workflow's status and, when it answers, its `progress` query."""
        handle, description = await self._described(workflow_id)
        status = description.status.name.lower() if description.status else "unknown"
        try:
            progress = await handle.query(PROGRESS_QUERY, result_type=RetrainingProgress)
        except RPCError:
            progress = None  # no worker answers queries right now (or the run is too old)
        except Exception:  # a query failed in the workflow: report the row alone
            progress = None
        return status, progress

    async def get(self, workflow_id: str) -> tuple[Row | None, str, RetrainingProgress | None]:
        async with self.pool.connection() as conn:
            row = await retraining_runs.get(conn, workflow_id)
        try:
            status, progress = await self.progress(workflow_id)
        except RunNotFound:
            if row is None:
                raise
            status, progress = row["status"], None
        return row, status, progress

    async def listing(self, status: str | None, limit: int, offset: int) -> list[Row]:
        async with self.pool.connection() as conn:
            return await retraining_runs.listing(conn, status=status, limit=limit, offset=offset)

    async def cancel(self, workflow_id: str, caller: Principal) -> bool:
        """Ask the run to stop; False when it is not running (finished, or unknown)."""
        handle, description = await self._described(workflow_id)
        running = description.status == WorkflowExecutionStatus.RUNNING
        if running:
            await handle.cancel()
        async with self.pool.connection() as conn:
            await record_audit(conn, caller, "retraining.cancel", f"retraining/{workflow_id}", workflow_id=workflow_id,
                               details={"outcome": "cancel requested" if running else "not running"})
        return running
