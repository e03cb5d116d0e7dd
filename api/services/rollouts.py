"""Rollouts as the API and `sightline rollout` offer them: start one for a candidate (the settings' plan
with the request's overrides; refused while any rollout runs on the model line, naming it: one at a
time), read them (the row, and while
running the workflow's `state` query), and act on one through the workflow's validated updates."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.audit import record_audit
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.tables import rollouts
from infra.tables.api_keys import Principal
from vision.registry import ModelRegistry
from workflows.failures import Failure, RolloutRefusal
from workflows.rollout_types import (
    STATE_QUERY,
    WORKFLOW_NAME,
    RolloutAction,
    RolloutState,
    line_held,
    plan_from,
    rollout_workflow_id,
)

ACTIONS = ("approve", "pause", "resume", "abort", "rollback")


class RolloutRefused(Exception):
    """A refusal with its HTTP status (workflows.failures.RolloutRefusal) and reason."""

    def __init__(self, failure: Failure, reason: str) -> None:
        super().__init__(reason)
        self.status = failure.http_status
        self.reason = reason


class RolloutService:
    def __init__(self, pool: DbPool, temporal: Client, settings: Settings, registry: ModelRegistry) -> None:
        self.pool = pool
        self.temporal = temporal
        self.settings = settings
        self.registry = registry

    async def start(self, candidate: str, overrides: dict[str, Any], caller: Principal | None,
                    requested_by: str, reason: str = "") -> str:
        if await asyncio.to_thread(self.registry.get, candidate) is None:
            raise RolloutRefused(RolloutRefusal.UNKNOWN_VERSION, f"no model version {candidate!r}")
        if (await asyncio.to_thread(self.registry.aliases)).get("production") == candidate:
            raise RolloutRefused(RolloutRefusal.SAME_AS_PRODUCTION, f"{candidate} is production already")
        try:
            plan = plan_from(candidate, self.settings.rollout_defaults(), requested_by, reason, **overrides)
        except (ValueError, TypeError) as exc:
            raise RolloutRefused(RolloutRefusal.INVALID, str(exc)) from None
        await self._line_free()
        workflow_id = rollout_workflow_id(candidate)
        try:
            await self.temporal.start_workflow(WORKFLOW_NAME, plan, id=workflow_id,
                                               task_queue=self.settings.orchestration_task_queue)
        except WorkflowAlreadyStartedError:
            raise RolloutRefused(RolloutRefusal.ALREADY_RUNNING,
                                 f"a rollout of {candidate} is running: {workflow_id}") from None
        if caller is not None:
            async with self.pool.connection() as conn:
                await record_audit(conn, caller, "rollout.start", f"rollouts/{workflow_id}", workflow_id=workflow_id,
                                   details={"candidate": candidate, "stages": [asdict(s) for s in plan.stages],
                                            "require_approval": plan.require_approval, "reason": reason})
        return workflow_id

    async def _line_free(self) -> None:
        """Refuse while a rollout holds the model line; release a lease whose rollout no longer runs
        (terminated or failed: it never let go). Two starts racing past this both start: the rollout
        itself takes the line, and the one that finds it taken ends skipped, naming the holder."""
        async with self.pool.connection() as conn:
            holder = await rollouts.lease_holder(conn)
        if holder is None:
            return
        if await rollouts.holder_running(self.temporal, holder):
            raise RolloutRefused(RolloutRefusal.LINE_BUSY, line_held(holder["rollout_id"], holder["candidate_version"]))
        async with self.pool.connection() as conn:
            await rollouts.release_lease(conn, rollout_id=holder["rollout_id"], run_id=holder["run_id"])

    async def state(self, rollout_id: str) -> RolloutState | None:
        """The workflow's `state` query, or None when it does not answer (no worker, or no such run)."""
        try:
            return await self.temporal.get_workflow_handle(rollout_id).query(STATE_QUERY, result_type=RolloutState)
        except Exception:
            return None

    async def get(self, rollout_id: str) -> tuple[Row | None, RolloutState | None]:
        async with self.pool.connection() as conn:
            row = await rollouts.get(conn, rollout_id)
        state = await self.state(rollout_id)
        if row is None and state is None:
            raise RolloutRefused(RolloutRefusal.NOT_FOUND, f"no rollout {rollout_id!r}")
        return row, state

    async def listing(self, status: str | None, limit: int, offset: int) -> list[Row]:
        async with self.pool.connection() as conn:
            return await rollouts.listing(conn, status=status, limit=limit, offset=offset)

    async def act(self, rollout_id: str, action: str, caller: Principal, reason: str = "") -> RolloutState:
        """One of ACTIONS through the workflow's update; its validator's refusal comes back as RolloutRefused."""
        handle = self.temporal.get_workflow_handle(rollout_id)
        who = RolloutAction(f"{caller.name} ({caller.key_id})", caller.role, reason)
        try:
            state: RolloutState = await handle.execute_update(action, who, result_type=RolloutState)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            failure = RolloutRefusal.of(cause.type) if isinstance(cause, ApplicationError) else None
            raise RolloutRefused(failure or RolloutRefusal.INVALID, str(cause)) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RolloutRefused(RolloutRefusal.NOT_FOUND, f"no running rollout {rollout_id!r}") from None
            raise
        async with self.pool.connection() as conn:
            await record_audit(conn, caller, f"rollout.{action}", f"rollouts/{rollout_id}", workflow_id=rollout_id,
                               details={"reason": reason, "status": state.status})
        return state
