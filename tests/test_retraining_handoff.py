"""A retraining run's hand-off to rollout when settings say so (`retraining_auto_rollout`): a candidate that
beats production starts its ModelRolloutWorkflow (id `rollout-<candidate>`, the settings' plan) as an
abandoned child that outlives the run; a second run that hands over the same candidate leaves the running
rollout alone; a candidate that does not beat production starts none. Training and the run's records are
scripted (tests/loop_stand_ins.py), the rollout waits: the real training is tests/test_retraining.py, the
real rollout tests/test_rollout.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from infra.settings import Settings
from tests.loop_stand_ins import ScriptedRetraining, WaitingRolloutWorkflow
from workers.orchestration import WORKFLOW_RUNNER
from workflows.retraining import RetrainingWorkflow
from workflows.retraining_types import (
    PROGRESS_QUERY,
    Outcome,
    RetrainingInput,
    RetrainingProgress,
    RetrainingResult,
    RetrainingTrigger,
    SnapshotPlan,
    TrainingParams,
)
from workflows.rollout_types import RolloutInput, plan_from, rollout_workflow_id


def retraining_input(settings: Settings, task_queue: str) -> RetrainingInput:
    """What the API and the drift policy start: the rollout plan is the settings' when they hand over."""
    plan = SnapshotPlan(f"snap-{uuid.uuid4().hex[:10]}", "datasets/x/plan.json", datetime.now(UTC).isoformat(), 40)
    rollout = plan_from("", settings.rollout_defaults(), "tests") if settings.retraining_auto_rollout else None
    return RetrainingInput(plan, TrainingParams(profile="micro"), RetrainingTrigger("manual", "tests"),
                           settings.retraining_min_improvement, task_queue, 30.0, 600.0, rollout)


async def retrain(client: Client, input: RetrainingInput, task_queue: str) -> tuple[RetrainingResult, str | None]:
    handle = await client.start_workflow(RetrainingWorkflow.run, input, id=f"retraining-{input.plan.snapshot_id}",
                                         task_queue=task_queue)
    result = await handle.result()
    progress = await handle.query(PROGRESS_QUERY, result_type=RetrainingProgress)
    return result, progress.rollout_workflow_id


@pytest.fixture
def auto_settings(settings_factory) -> Settings:
    return settings_factory(retraining_auto_rollout=True, rollout_canary_steps=[0.1, 0.3],
                            rollout_require_approval=True, rollout_stage_min_frames=500)


async def test_a_candidate_that_beats_production_starts_its_own_rollout(temporal_client: Client, task_queue: str,
                                                                        auto_settings: Settings):
    version = f"v-handoff-{uuid.uuid4().hex[:8]}"
    script = ScriptedRetraining(version, candidate_accuracy=0.9)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[RetrainingWorkflow, WaitingRolloutWorkflow],
                      activities=script.activities(), workflow_runner=WORKFLOW_RUNNER):
        result, rollout_id = await retrain(temporal_client, retraining_input(auto_settings, task_queue), task_queue)
        assert result.outcome == Outcome.CANDIDATE and result.candidate_version == version
        assert rollout_id == rollout_workflow_id(version)
        rollout = temporal_client.get_workflow_handle(rollout_id)
        try:
            # Abandoned: still running after the retraining closed, with the settings' plan and the reason.
            description = await rollout.describe()
            assert description.status == WorkflowExecutionStatus.RUNNING
            history = await rollout.fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            assert started.parent_workflow_execution.workflow_id == f"retraining-{result.snapshot_id}"
            plan = (await temporal_client.data_converter.decode(started.input.payloads, [RolloutInput]))[0]
            assert plan.candidate_version == version and plan.require_approval
            assert [s.name for s in plan.stages] == ["shadow 25%", "canary 10%", "canary 30%"]
            assert plan.stages[0].min_frames == 500 and plan.reason == result.reason

            # A second run handing over the same candidate (a retried hand-off) leaves the rollout as it is.
            again, again_id = await retrain(temporal_client, retraining_input(auto_settings, task_queue), task_queue)
            assert again.outcome == Outcome.CANDIDATE and again_id == rollout_id
            assert (await rollout.describe()).run_id == description.run_id
        finally:
            await rollout.terminate("test over")
    assert [h.version for h in script.handed_off] == [version, version]


async def test_without_the_setting_or_without_a_better_candidate_no_rollout_starts(
        temporal_client: Client, task_queue: str, auto_settings: Settings, settings_factory):
    for settings, accuracy, outcome in ((auto_settings, 0.4, Outcome.REJECTED),
                                        (settings_factory(retraining_auto_rollout=False), 0.9, Outcome.CANDIDATE)):
        version = f"v-handoff-{uuid.uuid4().hex[:8]}"
        script = ScriptedRetraining(version, candidate_accuracy=accuracy)
        async with Worker(temporal_client, task_queue=task_queue,
                          workflows=[RetrainingWorkflow, WaitingRolloutWorkflow], activities=script.activities(),
                          workflow_runner=WORKFLOW_RUNNER):
            result, rollout_id = await retrain(temporal_client, retraining_input(settings, task_queue), task_queue)
        assert result.outcome == outcome and rollout_id is None
        with pytest.raises(RPCError) as missing:
            await temporal_client.get_workflow_handle(rollout_workflow_id(version)).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
