"""The drift policy: retrain on drift when enough reviewed labels exist and the last retraining is older
than the cooldown; otherwise wait for labels. The cooldown passes on Temporal's time-skipping server,
and the Schedule that starts drift checks is created once and kept at the configured interval."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.loop_stand_ins import InstantRetrainingWorkflow, ScriptedDriftPolicy
from workers.loop import drift_schedule, ensure_drift_schedule
from workers.orchestration import WORKFLOW_RUNNER
from workflows.drift_check import DriftCheckWorkflow
from workflows.drift_types import SCHEDULE_ID, DriftCheckInput, DriftDecision, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_policy_needs_labels_and_a_cooled_down_trainer():
    assert decide(10, 200, None, NOW, 3600)[0] == DriftDecision.WAIT_FOR_LABELS
    decision, reason = decide(250, 200, NOW - timedelta(minutes=10), NOW, 3600)
    assert decision == DriftDecision.COOLDOWN and "600s ago" in reason
    assert decide(250, 200, NOW - timedelta(hours=2), NOW, 3600)[0] == DriftDecision.RETRAIN
    assert decide(250, 200, None, NOW, 3600)[0] == DriftDecision.RETRAIN


async def test_a_second_drift_within_the_cooldown_waits_and_after_it_retrains(time_skipping_env: WorkflowEnvironment,
                                                                               task_queue: str):
    client = time_skipping_env.client
    script = ScriptedDriftPolicy(labels=250, min_new_labels=200, cooldown_s=6 * 3600)

    async def check() -> str | None:
        result = await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput("plant-a", "tests"),
                                               id=f"drift-plant-a-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        return result.decision

    # Time passes only by the test's sleeps: while a result is awaited the server would otherwise skip to
    # its next timer (years ahead, when a workflow waits on nothing but a child's start).
    with time_skipping_env.auto_time_skipping_disabled():
        async with Worker(client, task_queue=task_queue, workflows=[DriftCheckWorkflow, InstantRetrainingWorkflow],
                          activities=script.activities(), workflow_runner=WORKFLOW_RUNNER):
            assert await check() == DriftDecision.RETRAIN
            await time_skipping_env.sleep(timedelta(hours=1))
            assert await check() == DriftDecision.COOLDOWN
            await time_skipping_env.sleep(timedelta(hours=6))
            assert await check() == DriftDecision.RETRAIN
    first, second, third = script.decisions
    assert second.last_retraining_at == first.decided_at and "within the 21600s cooldown" in second.reason
    assert timedelta(hours=7) <= script.decided_at(2) - script.decided_at(0) < timedelta(hours=8)
    assert first.retraining_workflow_id == "retraining-snap-0000" and third.retraining_workflow_id != \
        first.retraining_workflow_id


async def test_the_drift_schedule_is_created_once_and_kept_current(temporal_client: Client, settings_factory):
    settings = settings_factory(drift_check_interval_s=600)
    try:
        assert await ensure_drift_schedule(temporal_client, settings) == "created"
        assert await ensure_drift_schedule(temporal_client, settings) == "unchanged"
        faster = settings.model_copy(update={"drift_check_interval_s": 120})
        assert await ensure_drift_schedule(temporal_client, faster) == "updated"
        described = await temporal_client.get_schedule_handle(SCHEDULE_ID).describe()
        assert described.schedule.spec.intervals[0].every == timedelta(seconds=120)
        action = drift_schedule(faster).action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.workflow == "DriftCheckWorkflow"
    finally:
        await temporal_client.get_schedule_handle(SCHEDULE_ID).delete()
