"""ModelRolloutWorkflow (id `rollout-<candidate>`): shadow, then canary steps, then promotion, with gates
judged at the end of every stage from the predictions serving recorded; a failed gate rolls back at once
(the split back to production, the alias back to the previous version, the reason recorded, a signed
`rollout.rolled_back` webhook). The workflow drives the live traffic split in the registry; serving
follows it and never decides anything itself.

One rollout at a time per model line: the first activity takes the line's lease (a rollout that finds
it held by another ends `skipped`, the holder named, having changed nothing), and the last record lets
go of it. Every move of the split and the aliases names the registry revision the rollout read last; a
move refused because the line moved outside the rollout (a promotion by hand) stops it, and its
rollback leaves that production alone.

Updates (validated before they reach history): approve (the optional manual gate before promotion),
pause, resume, abort, rollback. The `state` query answers the stage, the split and the gates so far.
Every side effect is an idempotent activity, so a worker killed mid-rollout leaves the aliases as they
were and the rollout goes on where it was on the next worker.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow

from workflows import search_attributes as sa
from workflows.alert_delivery import start_webhook_delivery
from workflows.failures import RolloutRefusal
from workflows.policies import DB_RETRY, DB_TIMEOUT
from workflows.rollout_types import (
    ADMIN_ROLE,
    FINISHED,
    ROLLED_BACK_EVENT,
    ROLLOUT_DRIVERS,
    ROLLOUT_STOPPERS,
    STATE_QUERY,
    WORKFLOW_NAME,
    AliasMoveInput,
    ApplyStageInput,
    BeginRolloutInput,
    GateResult,
    LineMoved,
    RecordRolloutInput,
    RolloutAction,
    RolloutBegun,
    RolloutInput,
    RolloutState,
    RolloutStatus,
    Stage,
    StageKind,
    StageMetrics,
    StageMetricsInput,
    judge,
    line_held,
)

with workflow.unsafe.imports_passed_through():
    from activities.rollout import RolloutActivities

# Who stops a rollout whose move was refused because the model line moved outside it.
_OUTSIDE = RolloutAction("rollout", "system")


@workflow.defn(name=WORKFLOW_NAME)
class ModelRolloutWorkflow:
    @workflow.init
    def __init__(self, input: RolloutInput) -> None:
        self._input = input
        self._state = RolloutState(workflow.info().workflow_id, input.candidate_version,
                                   stages=[s.name for s in input.stages], require_approval=input.require_approval,
                                   requested_by=input.requested_by)
        # (status, reason, who) once the rollout must stop early: a failed gate, abort or rollback.
        self._stop: tuple[RolloutStatus, str, RolloutAction] | None = None
        # The registry line's revision after the rollout's last move (or at its start): the next move is
        # applied only if the line is still there. None in runs begun before revisions.
        self._revision: int | None = None

    # ---- query and updates ----

    @workflow.query(name=STATE_QUERY)
    def state(self) -> RolloutState:
        return self._state

    def _check_open(self, action: RolloutAction, roles: tuple[str, ...]) -> None:
        if self._state.status in FINISHED or self._stop is not None:
            raise RolloutRefusal.NOT_RUNNING.error(
                f"rollout {self._state.rollout_id} is {self._stop[0] if self._stop else self._state.status}")
        if action.role and action.role != ADMIN_ROLE and action.role not in roles:
            raise RolloutRefusal.FORBIDDEN.error(
                f"role {action.role!r} may not do this; it needs {', '.join((*roles, ADMIN_ROLE))}")

    @workflow.update
    def approve(self, action: RolloutAction) -> RolloutState:
        self._check_approve(action)
        self._state.approved_by = action.by
        return self._state

    @approve.validator
    def _check_approve(self, action: RolloutAction) -> None:
        self._check_open(action, ROLLOUT_DRIVERS)
        if not self._input.require_approval:
            raise RolloutRefusal.APPROVAL_NOT_REQUIRED.error("this rollout promotes without a manual approval")

    @workflow.update
    def pause(self, action: RolloutAction) -> RolloutState:
        self._check_pause(action)
        self._state.paused = True
        self._state.status = RolloutStatus.PAUSED
        return self._state

    @pause.validator
    def _check_pause(self, action: RolloutAction) -> None:
        self._check_open(action, ROLLOUT_STOPPERS)
        if self._state.paused:
            raise RolloutRefusal.ALREADY_PAUSED.error(f"rollout {self._state.rollout_id} is paused already")

    @workflow.update
    def resume(self, action: RolloutAction) -> RolloutState:
        self._check_resume(action)
        self._state.paused = False
        self._state.status = (RolloutStatus.AWAITING_APPROVAL if self._state.stage == "approval"
                              else RolloutStatus.RUNNING)
        return self._state

    @resume.validator
    def _check_resume(self, action: RolloutAction) -> None:
        self._check_open(action, ROLLOUT_DRIVERS)
        if not self._state.paused:
            raise RolloutRefusal.NOT_PAUSED.error(f"rollout {self._state.rollout_id} is not paused")

    @workflow.update
    def abort(self, action: RolloutAction) -> RolloutState:
        self._check_abort(action)
        self._stop = (RolloutStatus.ABORTED, action.reason or f"aborted by {action.by}", action)
        return self._state

    @abort.validator
    def _check_abort(self, action: RolloutAction) -> None:
        self._check_open(action, ROLLOUT_STOPPERS)

    @workflow.update
    def rollback(self, action: RolloutAction) -> RolloutState:
        self._check_rollback(action)
        self._stop = (RolloutStatus.ROLLED_BACK, action.reason or f"rolled back by {action.by}", action)
        return self._state

    @rollback.validator
    def _check_rollback(self, action: RolloutAction) -> None:
        self._check_open(action, ROLLOUT_STOPPERS)

    # ---- the run ----

    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutState:
        workflow.upsert_search_attributes([sa.MODEL_VERSION.value_set(input.candidate_version),
                                           sa.STATUS.value_set(RolloutStatus.RUNNING)])
        self._state.started_at = workflow.now().isoformat()
        begun: RolloutBegun = await workflow.execute_activity_method(
            RolloutActivities.begin_rollout,
            BeginRolloutInput(self._state.rollout_id, input.candidate_version, input.requested_by, input.reason,
                              self._state.started_at),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        if begun.held_by is not None:
            return await self._skipped(begun)
        production = self._state.previous_version = begun.production_version
        self._revision = begun.revision
        self._state.split = {production: 1.0}

        for index, stage in enumerate(input.stages):
            if self._stop:
                break
            self._state.stage_index, self._state.stage = index, stage.name
            if not await self._apply(stage.kind, stage.share, f"stage {stage.name}"):
                break
            gate = await self._run_stage(stage, production)
            if gate is not None and not gate.passed:
                self._stop = (RolloutStatus.ROLLED_BACK, f"gate failed at {stage.name}: {gate.failures}",
                              RolloutAction("gates", "system"))
        if not self._stop and input.require_approval and self._state.approved_by is None:
            self._state.stage = "approval"
            if not self._state.paused:
                self._state.status = RolloutStatus.AWAITING_APPROVAL
            await self._record()
            await workflow.wait_condition(lambda: self._state.approved_by is not None or self._stop is not None)
        await workflow.wait_condition(lambda: not self._state.paused or self._stop is not None)

        if self._stop:
            await self._stop_rollout(*self._stop)
        else:
            self._state.stage = "promote"
            moved: LineMoved | None = await workflow.execute_activity_method(  # None: recorded before moves answered
                RolloutActivities.promote,
                AliasMoveInput(self._state.rollout_id, input.candidate_version, production,
                               self._state.approved_by or input.requested_by or "rollout", "",
                               f"promoted by rollout {self._state.rollout_id} after {len(input.stages)} stages",
                               self._revision),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
            if moved is not None and moved.conflict:
                self._stop = (RolloutStatus.ABORTED, f"not promoted: {moved.conflict}", _OUTSIDE)
                await self._stop_rollout(*self._stop)
            else:
                self._state.split = {input.candidate_version: 1.0}
                self._state.shadow_share = 0.0
                self._state.status = RolloutStatus.PROMOTED
                self._state.reason = "every gate passed"
        self._state.finished_at = workflow.now().isoformat()
        self._state.paused = False
        await self._record()
        workflow.upsert_search_attributes([sa.STATUS.value_set(self._state.status)])
        return self._state

    async def _run_stage(self, stage: Stage, production: str) -> GateResult | None:
        """Wait until the stage has its frames and its time (reading its figures every poll interval),
        then judge its gates. None when the rollout was stopped meanwhile."""
        started = workflow.now()
        await self._record()
        while True:
            with contextlib.suppress(TimeoutError):  # the poll interval passed: read the figures
                await workflow.wait_condition(lambda: self._stop is not None,
                                              timeout=timedelta(seconds=self._input.poll_interval_s))
            if self._stop:
                return None
            if self._state.paused:
                await workflow.wait_condition(lambda: not self._state.paused or self._stop is not None)
                continue
            metrics: StageMetrics = await workflow.execute_activity_method(
                RolloutActivities.stage_metrics,
                StageMetricsInput(self._input.candidate_version, production, stage.kind, started.isoformat(),
                                  self._input.thresholds.low_confidence),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
            self._state.current = metrics
            elapsed = (workflow.now() - started).total_seconds()
            if metrics.frames >= stage.min_frames and elapsed >= stage.min_duration_s and not self._stop:
                gate = judge(stage, metrics, self._input.thresholds, workflow.now().isoformat(),
                             reviews_overrule_agreement=workflow.patched("reviews-overrule-agreement"))
                self._state.gates.append(gate)
                await self._record()
                return gate

    async def _skipped(self, begun: RolloutBegun) -> RolloutState:
        """Another rollout holds the model line: end at once, having changed nothing, naming the holder."""
        assert begun.held_by is not None
        self._state.previous_version = begun.production_version
        self._state.status, self._state.stage = RolloutStatus.SKIPPED, "skipped"
        self._state.reason = f"skipped: {line_held(begun.held_by, begun.held_by_candidate or 'unknown')}"
        self._state.finished_at = workflow.now().isoformat()
        await self._record()
        workflow.upsert_search_attributes([sa.STATUS.value_set(self._state.status)])
        return self._state

    async def _apply(self, kind: str | None, share: float, reason: str) -> bool:
        """Make a stage's split live; False (and the rollout stopping) when the line moved outside it."""
        production = self._state.previous_version
        assert production is not None
        moved: LineMoved | None = await workflow.execute_activity_method(  # None: recorded before moves answered
            RolloutActivities.apply_stage,
            ApplyStageInput(self._state.rollout_id, self._input.candidate_version, production, kind, share,
                            f"rollout {self._state.rollout_id}", reason, self._revision),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        if moved is not None and moved.conflict:
            self._stop = (RolloutStatus.ABORTED, f"stopped before {reason}: {moved.conflict}", _OUTSIDE)
            return False
        if moved is not None:
            self._revision = moved.revision
        candidate = self._input.candidate_version
        canary = share if kind == StageKind.CANARY else 0.0
        self._state.split = {k: v for k, v in ((candidate, canary), (production, 1.0 - canary)) if v > 0}
        self._state.shadow_share = share if kind == StageKind.SHADOW else 0.0
        return True

    async def _stop_rollout(self, status: RolloutStatus, reason: str, action: RolloutAction) -> None:
        """Abort or roll back: everything back to the previous version at once, and the reason kept; a
        production someone else set meanwhile stays, and the reason says so."""
        previous = self._state.previous_version
        assert previous is not None
        moved: LineMoved | None = await workflow.execute_activity_method(  # None: recorded before moves answered
            RolloutActivities.roll_back,
            AliasMoveInput(self._state.rollout_id, self._input.candidate_version, previous, action.by, action.role,
                           reason, self._revision),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
        production = (moved.production if moved is not None else None) or previous
        if moved is not None and moved.left:
            reason = f"{reason}; {moved.left}"
        self._state.split = {production: 1.0}
        self._state.shadow_share = 0.0
        self._state.status, self._state.reason = status, reason
        if status == RolloutStatus.ROLLED_BACK and self._input.webhook_url:
            await start_webhook_delivery(self._input.webhook_url, ROLLED_BACK_EVENT, {
                "rollout_id": self._state.rollout_id, "candidate_version": self._input.candidate_version,
                "production_version": production, "stage": self._state.stage, "reason": reason,
                "by": action.by, "gates": [{"stage": g.stage, "passed": g.passed,
                                            "checks": [c.__dict__ for c in g.checks]} for g in self._state.gates],
            }, delivery_id=f"{self._state.rollout_id}.{workflow.info().run_id}.rolled_back")

    async def _record(self) -> None:
        await workflow.execute_activity_method(
            RolloutActivities.record_rollout, RecordRolloutInput(self._state),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)
