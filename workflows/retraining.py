"""RetrainingWorkflow (id `retraining-<snapshot id>`): build the snapshot, train a candidate on the
`training` task queue, evaluate it and production on the same held-out frames, register it with its
model card (signed), and hand it to rollout only when it beats production by the margin.

Training is one long activity that heartbeats and checkpoints every epoch: a killed training worker's
attempt is retried and resumes from the last checkpoint. A cancel stops training within seconds (the
workflow waits for the activity to acknowledge it) and the run's row says `cancelled`. Its progress
(epoch, loss, ETA) is the `progress` query, kept current by the activity's signals.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

from workflows import search_attributes as sa
from workflows.policies import DB_RETRY, DB_TIMEOUT, EVALUATE_TIMEOUT, SNAPSHOT_TIMEOUT, TRAINING_RETRY
from workflows.retraining_types import (
    PROGRESS_QUERY,
    PROGRESS_SIGNAL,
    WORKFLOW_NAME,
    EvaluateInput,
    Evaluation,
    FinishRunInput,
    HandOffInput,
    MaterializeSnapshotInput,
    Outcome,
    RegisterCandidateInput,
    RetrainingInput,
    RetrainingPhase,
    RetrainingProgress,
    RetrainingResult,
    RunStatus,
    StartRunInput,
    TrainCandidateInput,
    TrainingProgress,
    beats_production,
)
from workflows.rollout_types import WORKFLOW_NAME as ROLLOUT_WORKFLOW
from workflows.rollout_types import LineCheck, LineCheckInput, RolloutInput, rollout_workflow_id

with workflow.unsafe.imports_passed_through():
    from activities.retraining import RetrainingRecords
    from activities.rollout import RolloutActivities
    from activities.training import TrainingActivities


def _failure_message(exc: BaseException) -> str:
    while isinstance(exc, ActivityError | ChildWorkflowError) and exc.cause is not None:
        exc = exc.cause
    return str(exc) if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"


@workflow.defn(name=WORKFLOW_NAME)
class RetrainingWorkflow:
    @workflow.init
    def __init__(self, input: RetrainingInput) -> None:
        self._progress = RetrainingProgress(RetrainingPhase.STARTING, input.plan.snapshot_id)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> RetrainingProgress:
        return self._progress

    @workflow.signal(name=PROGRESS_SIGNAL)
    def training_progress(self, progress: TrainingProgress) -> None:
        # Signals from a retried attempt may overtake a late one from the attempt before: keep the newest.
        current = self._progress.training
        if (progress.attempt, progress.step) >= (current.attempt, current.step):
            self._progress.training = progress

    def _phase(self, phase: RetrainingPhase) -> None:
        self._progress.phase = phase

    @workflow.run
    async def run(self, input: RetrainingInput) -> RetrainingResult:
        workflow_id = workflow.info().workflow_id
        workflow.upsert_search_attributes([sa.STATUS.value_set(RunStatus.RUNNING)])
        started = await workflow.execute_activity_method(
            RetrainingRecords.start_retraining_run,
            StartRunInput(workflow_id, input.plan.snapshot_id, input.trigger, input.params,
                          workflow.now().isoformat()),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
        )
        production = self._progress.production_version = started.production_version
        try:
            return await self._retrain(input, workflow_id, production)
        except asyncio.CancelledError:
            await self._finish(FinishRunInput(workflow_id, RunStatus.CANCELLED, self._progress.phase,
                                              workflow.now().isoformat(), error="cancelled"))
            raise
        except ActivityError as exc:
            # A cancel that reached the training activity comes back as that activity's cancellation.
            cancelled = isinstance(exc.cause, CancelledError)
            await self._finish(FinishRunInput(
                workflow_id, RunStatus.CANCELLED if cancelled else RunStatus.FAILED, self._progress.phase,
                workflow.now().isoformat(), error="cancelled" if cancelled else _failure_message(exc)))
            raise

    async def _retrain(self, input: RetrainingInput, workflow_id: str, production: str | None) -> RetrainingResult:
        queue = input.training_task_queue
        self._phase(RetrainingPhase.SNAPSHOT)
        snapshot = await workflow.execute_activity_method(
            TrainingActivities.materialize_snapshot, MaterializeSnapshotInput(input.plan), task_queue=queue,
            start_to_close_timeout=SNAPSHOT_TIMEOUT, heartbeat_timeout=timedelta(seconds=input.heartbeat_timeout_s),
            retry_policy=TRAINING_RETRY,
        )

        self._phase(RetrainingPhase.TRAINING)
        candidate = await workflow.execute_activity_method(
            TrainingActivities.train_candidate,
            TrainCandidateInput(workflow_id, snapshot, input.params, production),
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=input.training_timeout_s),
            heartbeat_timeout=timedelta(seconds=input.heartbeat_timeout_s),
            retry_policy=TRAINING_RETRY,
            # A cancel waits for training to stop, so the run is never reported cancelled while it trains.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

        self._phase(RetrainingPhase.EVALUATING)
        evaluation: Evaluation = await workflow.execute_activity_method(
            TrainingActivities.evaluate_candidate, EvaluateInput(workflow_id, snapshot, candidate, production),
            task_queue=queue, start_to_close_timeout=EVALUATE_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=input.heartbeat_timeout_s), retry_policy=TRAINING_RETRY,
        )

        self._phase(RetrainingPhase.REGISTERING)
        registered = await workflow.execute_activity_method(
            TrainingActivities.register_candidate,
            RegisterCandidateInput(workflow_id, snapshot, candidate, evaluation, input.trigger, input.params,
                                   production),
            task_queue=queue, start_to_close_timeout=EVALUATE_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=input.heartbeat_timeout_s), retry_policy=TRAINING_RETRY,
        )
        self._progress.candidate_version = registered.version

        beats, reason = beats_production(evaluation, input.min_improvement)
        outcome = Outcome.CANDIDATE if beats else Outcome.REJECTED
        if beats:
            await workflow.execute_activity_method(
                RetrainingRecords.hand_to_rollout, HandOffInput(workflow_id, registered.version, reason),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
            )
            if input.rollout is not None:
                await self._start_rollout(input.rollout, registered.version, reason)
        self._phase(RetrainingPhase.DONE)
        self._progress.outcome, self._progress.outcome_reason = outcome, reason
        await self._finish(FinishRunInput(
            workflow_id, RunStatus.COMPLETED, RetrainingPhase.DONE, workflow.now().isoformat(),
            candidate_version=registered.version, outcome=outcome, outcome_reason=reason, evaluation=evaluation,
            epochs_run=candidate.epochs_run, resumed_from_epoch=candidate.resumed_from_epoch))
        workflow.upsert_search_attributes([sa.STATUS.value_set(RunStatus.COMPLETED),
                                           sa.MODEL_VERSION.value_set(registered.version)])
        return RetrainingResult(input.plan.snapshot_id, registered.version, outcome, reason, evaluation,
                                candidate.epochs_run, candidate.resumed_from_epoch)

    async def _start_rollout(self, plan: RolloutInput, version: str, reason: str) -> None:
        """The candidate's rollout, as an abandoned child: it outlives this run. One already running for
        the candidate (a retried start) is left alone. While another rollout holds the model line (one
        at a time) none starts: the hand-off is recorded as skipped, in the rollouts table and here."""
        rollout_id = rollout_workflow_id(version)
        if workflow.patched("auto-rollout-one-at-a-time"):  # runs begun before the check start the child at once
            check: LineCheck = await workflow.execute_activity_method(
                RolloutActivities.skip_rollout_if_line_busy,
                LineCheckInput(rollout_id, version, plan.requested_by, reason, workflow.now().isoformat()),
                start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
            )
            if check.held_by is not None:
                self._progress.rollout_skipped = check.reason
                return
        try:
            await workflow.start_child_workflow(
                ROLLOUT_WORKFLOW, replace(plan, candidate_version=version, reason=reason), id=rollout_id,
                parent_close_policy=ParentClosePolicy.ABANDON)
        except WorkflowAlreadyStartedError:
            workflow.logger.info("rollout %s already started", rollout_id)
        self._progress.rollout_workflow_id = rollout_id

    async def _finish(self, finish: FinishRunInput) -> None:
        await workflow.execute_activity_method(
            RetrainingRecords.finish_retraining_run, finish, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
        )
