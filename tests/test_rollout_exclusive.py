"""One rollout at a time per model line, and every alias or split move one compare-and-set transaction on
the registry revision its mover read (issue 21), on the real stack (Temporal dev server, Postgres):

- a second start while a rollout runs is answered 409 naming the running one; a lease whose rollout no
  longer runs does not block the next;
- two rollouts racing past the API's check: one runs, the other ends `skipped` naming the holder;
- a retraining's auto-rollout while another runs is skipped, in the rollouts table and its progress;
- a promotion made outside a rollout is left alone by its rollback, and stops it before its next stage;
- the registry refuses a move on a stale revision (naming who moved what), and a retried move (the
  same move id) is applied once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.rollout import RolloutActivities
from infra.settings import Settings
from tests.history_recorder import HistoryRecorder
from tests.loop_stand_ins import ScriptedRetraining
from tests.loop_support import loop_workers
from tests.polling import eventually
from tests.review_support import fetch_all
from vision.registry import ALIASES, LineMove, RevisionConflict
from vision.traffic import TrafficSplit
from workers.orchestration import WORKFLOW_RUNNER
from workflows.retraining import RetrainingWorkflow
from workflows.retraining_types import (
    PROGRESS_QUERY,
    Outcome,
    RetrainingInput,
    RetrainingProgress,
    RetrainingTrigger,
    SnapshotPlan,
    TrainingParams,
)
from workflows.rollout import ModelRolloutWorkflow
from workflows.rollout_types import (
    AliasMoveInput,
    RolloutAction,
    RolloutInput,
    RolloutState,
    RolloutStatus,
    plan_from,
    rollout_workflow_id,
)

pytest_plugins = ["tests.serving_fixtures", "tests.loop_support"]

# Stages that cannot finish on their own (no traffic flows here): the rollout holds its shadow split.
STUCK = dict(shadow_share=0.5, canary_steps=[0.5], min_frames=1_000_000, min_duration_s=0.0, poll_interval_s=0.3)


@pytest_asyncio.fixture
async def line(registry, temporal_client: Client) -> AsyncIterator[list[str]]:
    """The rollouts a test starts (append their ids): none outlives it, and the session's production
    model and an empty split are back afterwards, as other tests expect."""
    aliases = registry.aliases()
    started: list[str] = []
    yield started
    for rollout_id in started:
        with contextlib.suppress(RPCError):  # finished already
            await temporal_client.get_workflow_handle(rollout_id).terminate("test over")
    registry.set_traffic(TrafficSplit(), "tests", "reset after a rollout test")
    for alias in ALIASES:
        registry.set_alias(alias, aliases.get(alias), "tests", "restore after a rollout test")


@pytest.fixture
def rollout_settings(settings_factory) -> Settings:
    return settings_factory(**{f"rollout_{k}": v for k, v in {
        "shadow_share": 0.5, "canary_steps": [0.5], "stage_min_frames": 1_000_000, "poll_interval_s": 0.3}.items()})


def _version(registry, model_store, trained_model) -> str:
    from vision.publishing import register_trained

    return register_trained(registry, model_store, trained_model, created_by="tests").version


async def _start(client: Client, settings: Settings, candidate: str, **overrides) -> WorkflowHandle:
    plan: RolloutInput = plan_from(candidate, settings.rollout_defaults(), "tests", "exclusive test", **overrides)
    return await client.start_workflow(ModelRolloutWorkflow.run, plan, id=rollout_workflow_id(candidate),
                                       task_queue=settings.orchestration_task_queue)


async def _shadowing(registry, candidate: str) -> None:
    async def live() -> bool:
        return (await asyncio.to_thread(registry.traffic)).shadow_version == candidate

    await eventually(live, timeout=60, message=f"the shadow split of {candidate}")


async def _row(pool, rollout_id: str) -> dict:
    [row] = await fetch_all(pool, "SELECT * FROM rollouts WHERE rollout_id = %s", rollout_id)
    return row


async def test_a_second_rollout_while_one_runs_is_refused_naming_it(api, line, registry, model_store, trained_model,
                                                                    production_model):
    first, second = (_version(registry, model_store, trained_model) for _ in range(2))
    ml, ops = api.auth("ml-engineer"), api.auth("ops")
    plan = {"reason": "exclusive test", "min_frames": 1_000_000, "poll_interval_s": 0.3}

    started = await api.http.post("/v1/rollouts", json={**plan, "candidate_version": first}, headers=ml)
    assert started.status_code == 202, started.text
    first_id = started.json()["rollout_id"]
    line.append(first_id)
    await _shadowing(registry, first)

    refused = await api.http.post("/v1/rollouts", json={**plan, "candidate_version": second}, headers=ml)
    assert refused.status_code == 409, refused.text
    assert first_id in refused.text and f"candidate {first}" in refused.text, refused.text
    with pytest.raises(RPCError) as missing:  # refused before anything started
        await api.client.get_workflow_handle(rollout_workflow_id(second)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND

    # A rollout that ended without letting go of the line (terminated) does not block the next one.
    await api.client.get_workflow_handle(first_id).terminate("gone without finishing")
    again = await api.http.post("/v1/rollouts", json={**plan, "candidate_version": second}, headers=ml)
    assert again.status_code == 202, again.text
    second_id = again.json()["rollout_id"]
    line.append(second_id)
    await _shadowing(registry, second)

    # Finished, it lets go: the next start proceeds.
    aborted = await api.http.post(f"/v1/rollouts/{second_id}/abort", json={"reason": "next one"}, headers=ops)
    assert aborted.status_code == 200, aborted.text
    await asyncio.wait_for(api.client.get_workflow_handle(second_id).result(), 60)
    third = await api.http.post("/v1/rollouts", json={**plan, "candidate_version": first}, headers=ml)
    assert third.status_code == 202, third.text
    await _shadowing(registry, first)
    assert (await api.http.post(f"/v1/rollouts/{first_id}/abort", json={}, headers=ops)).status_code == 200


async def test_two_rollouts_racing_past_the_api_check_one_runs_the_other_is_skipped(
        line, temporal_client, db_pool, registry, model_store, trained_model, production_model, rollout_settings,
        loop_history: HistoryRecorder):
    a, b = (_version(registry, model_store, trained_model) for _ in range(2))
    async with loop_workers(temporal_client, db_pool, model_store, rollout_settings, registry, training=False):
        handles = await asyncio.gather(*(_start(temporal_client, rollout_settings, v, **STUCK) for v in (a, b)))
        line.extend(h.id for h in handles)
        results = {asyncio.ensure_future(h.result()): h for h in handles}
        done, pending = await asyncio.wait(results, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "exactly one of the two ends at once"
        [finished] = done
        loser, winner = results[finished], results[next(iter(pending))]
        skipped: RolloutState = finished.result()
        assert skipped.status == RolloutStatus.SKIPPED and winner.id in (skipped.reason or ""), skipped
        assert (await winner.describe()).status == WorkflowExecutionStatus.RUNNING
        await _shadowing(registry, winner.id.removeprefix("rollout-"))

        row = await _row(db_pool, loser.id)
        assert row["status"] == "skipped" and winner.id in row["reason"] and row["finished_at"] is not None
        # The loser never wrote the split or an alias.
        assert not [h for h in registry.traffic_history() if h["rollout_id"] == loser.id]
        assert registry.aliases().get("shadow") != loser.id.removeprefix("rollout-")

        await winner.execute_update(ModelRolloutWorkflow.abort, RolloutAction("ops-1", "ops", "test over"))
        for task in pending:
            assert (await asyncio.wait_for(task, 60)).status == RolloutStatus.ABORTED
    await loop_history(loser, "model_rollout_skipped_line_held")


async def test_an_auto_rollout_while_another_runs_is_skipped_and_recorded(
        line, temporal_client, db_pool, registry, model_store, trained_model, production_model, rollout_settings,
        task_queue, loop_history: HistoryRecorder):
    running = _version(registry, model_store, trained_model)
    handed = f"v-auto-{uuid.uuid4().hex[:8]}"
    script = ScriptedRetraining(handed, candidate_accuracy=0.9)
    rollout = RolloutActivities(db_pool, registry)
    # The retraining's own steps scripted; the rollout's activities (the line check among them) real.
    activities = [a for a in script.activities() if a.__name__ != "skip_rollout_if_line_busy"] + [
        rollout.begin_rollout, rollout.apply_stage, rollout.stage_metrics, rollout.record_rollout, rollout.promote,
        rollout.roll_back, rollout.skip_rollout_if_line_busy]
    async with Worker(temporal_client, task_queue=task_queue, workflows=[RetrainingWorkflow, ModelRolloutWorkflow],
                      activities=activities, workflow_runner=WORKFLOW_RUNNER):
        holder = await _start(temporal_client, rollout_settings, running, **STUCK)
        line.append(holder.id)
        await _shadowing(registry, running)

        plan = SnapshotPlan(f"snap-{uuid.uuid4().hex[:10]}", "datasets/x/plan.json", datetime.now(UTC).isoformat(), 40)
        auto = plan_from("", rollout_settings.rollout_defaults(), "tests")
        retraining = await temporal_client.start_workflow(
            RetrainingWorkflow.run, RetrainingInput(plan, TrainingParams(profile="micro"),
                                                    RetrainingTrigger("manual", "tests"), 0.01, task_queue, 30.0,
                                                    600.0, auto),
            id=f"retraining-{plan.snapshot_id}", task_queue=task_queue)
        result = await asyncio.wait_for(retraining.result(), 60)
        progress = await retraining.query(PROGRESS_QUERY, result_type=RetrainingProgress)

        assert result.outcome == Outcome.CANDIDATE and [h.version for h in script.handed_off] == [handed]
        skipped_id = rollout_workflow_id(handed)
        assert progress.rollout_skipped and holder.id in progress.rollout_skipped, progress
        assert progress.rollout_workflow_id is None
        with pytest.raises(RPCError) as missing:  # no rollout started
            await temporal_client.get_workflow_handle(skipped_id).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
        row = await _row(db_pool, skipped_id)
        assert row["status"] == "skipped" and holder.id in row["reason"] and row["candidate_version"] == handed
        # The running rollout goes on where it was.
        assert (await holder.describe()).status == WorkflowExecutionStatus.RUNNING
        assert registry.traffic().shadow_version == running
        await holder.execute_update(ModelRolloutWorkflow.abort, RolloutAction("ops-1", "ops", "test over"))
        await asyncio.wait_for(holder.result(), 60)
    await loop_history(retraining, "retraining_auto_rollout_skipped")


async def test_a_rollback_leaves_a_production_promoted_outside_the_rollout(
        line, temporal_client, db_pool, registry, model_store, trained_model, production_model, rollout_settings):
    production = production_model.version
    candidate, hotfix = (_version(registry, model_store, trained_model) for _ in range(2))
    async with loop_workers(temporal_client, db_pool, model_store, rollout_settings, registry, training=False):
        handle = await _start(temporal_client, rollout_settings, candidate, **STUCK)
        line.append(handle.id)
        await _shadowing(registry, candidate)
        # `sightline model promote` in the middle of the rollout.
        registry.set_alias("production", hotfix, "alice", "hotfix during the rollout")
        await handle.execute_update(ModelRolloutWorkflow.rollback, RolloutAction("ops-1", "ops", "line stopped"))
        result: RolloutState = await asyncio.wait_for(handle.result(), 60)

    assert result.status == RolloutStatus.ROLLED_BACK
    assert registry.aliases()["production"] == hotfix, "the rollback put back the version it began with"
    assert hotfix in (result.reason or "") and "alice" in (result.reason or ""), result.reason
    # Its own split and shadow are gone; production's history has alice's move last.
    assert registry.traffic().shadow_version is None and "shadow" not in registry.aliases()
    last = registry.alias_history("production")[-1]
    assert (last.from_version, last.to_version, last.changed_by) == (production, hotfix, "alice")
    audit = await fetch_all(db_pool, "SELECT details FROM audit_log WHERE workflow_id = %s"
                            " AND action = 'rollout.rollback'", handle.id)
    assert len(audit) == 1 and audit[0]["details"]["to"] == hotfix and "alice" in audit[0]["details"]["left"]
    assert (await _row(db_pool, handle.id))["status"] == "rolled_back"


async def test_a_promotion_outside_the_rollout_stops_it_before_its_next_stage(
        line, temporal_client, db_pool, registry, model_store, trained_model, production_model, rollout_settings,
        loop_history: HistoryRecorder):
    candidate, hotfix = (_version(registry, model_store, trained_model) for _ in range(2))
    # Stages that pass on their own (no frames needed) once their time has passed.
    plan = dict(STUCK, min_frames=0, min_duration_s=2.0)
    async with loop_workers(temporal_client, db_pool, model_store, rollout_settings, registry, training=False):
        handle = await _start(temporal_client, rollout_settings, candidate, **plan)
        line.append(handle.id)
        await _shadowing(registry, candidate)
        # Held in its shadow stage while production moves elsewhere, then let go on.
        await handle.execute_update(ModelRolloutWorkflow.pause, RolloutAction("ops-1", "ops"))
        registry.set_alias("production", hotfix, "alice", "hotfix during the rollout")
        await handle.execute_update(ModelRolloutWorkflow.resume, RolloutAction("mle", "ml-engineer"))
        result: RolloutState = await asyncio.wait_for(handle.result(), 60)
    await loop_history(handle, "model_rollout_stopped_line_moved")

    assert result.status == RolloutStatus.ABORTED, result
    assert "moved" in (result.reason or "") and "alice" in (result.reason or ""), result.reason
    assert [g.stage for g in result.gates] == ["shadow 50%"]
    assert registry.aliases()["production"] == hotfix and registry.traffic().weights == ()
    assert registry.traffic().shadow_version is None
    # No canary split was ever made live against a production that was no longer production.
    assert not [h for h in registry.traffic_history() if h["rollout_id"] == handle.id and h["weights"]]


async def test_the_registry_refuses_a_stale_revision_and_applies_a_retried_move_once(
        line, db_pool, registry, model_store, trained_model, production_model):
    production = production_model.version
    hotfix, candidate = (_version(registry, model_store, trained_model) for _ in range(2))
    read = registry.line()
    assert read.aliases["production"] == production
    # Every change of what serving follows moves the revision in its own transaction; a no-op does not.
    registry.set_alias("production", hotfix, "alice", "hotfix")
    assert registry.line().revision == read.revision + 1
    registry.set_alias("production", hotfix, "alice", "again")
    assert registry.line().revision == read.revision + 1

    # A move on the revision read before alice's: refused, naming what moved, and nothing of it applied.
    with pytest.raises(RevisionConflict) as stale:
        registry.move(LineMove({"production": production, "shadow": None}, TrafficSplit(rollout_id="r-stale")),
                      expected_revision=read.revision, move_id=f"stale-{uuid.uuid4().hex}", changed_by="rollout",
                      reason="roll back")
    message = str(stale.value)
    assert "production" in message and hotfix in message and "alice" in message, message
    assert stale.value.current == read.revision + 1
    assert registry.aliases()["production"] == hotfix and registry.traffic().rollout_id != "r-stale"

    # A move applied, then retried under its id after someone else moved the line: applied once.
    now = registry.line().revision
    move = LineMove({"shadow": candidate}, TrafficSplit((), candidate, 0.25, rollout_id="r-retry"))
    move_id = f"retry-{uuid.uuid4().hex}"
    first = registry.move(move, expected_revision=now, move_id=move_id, changed_by="rollout", reason="shadow 25%")
    assert first.revision == now + 1 and not first.replayed
    registry.set_traffic(TrafficSplit((), candidate, 0.5, rollout_id="r-bob"), "bob", "more shadow")
    again = registry.move(move, expected_revision=now, move_id=move_id, changed_by="rollout", reason="shadow 25%")
    assert again.replayed and again.revision == first.revision
    assert registry.traffic().rollout_id == "r-bob", "the retry changed nothing"
    assert len([h for h in registry.traffic_history() if h["rollout_id"] == "r-retry"]) == 1
    assert len([h for h in registry.alias_history("shadow") if h.reason == "shadow 25%"]) == 1


async def test_a_retried_promotion_succeeds_once_after_the_line_moved(
        line, db_pool, registry, model_store, trained_model, production_model):
    production = production_model.version
    candidate, other = (_version(registry, model_store, trained_model) for _ in range(2))
    rollout_id = f"rollout-retry-{uuid.uuid4().hex[:8]}"
    promote = AliasMoveInput(rollout_id, candidate, production, "mle", "", "promoted by the test",
                             revision=registry.line().revision)
    env = ActivityEnvironment()  # the same activity info each run: a retry of one attempt
    activities = RolloutActivities(db_pool, registry)
    moved = await env.run(activities.promote, promote)
    assert moved.conflict is None and registry.aliases()["production"] == candidate
    registry.set_alias("shadow", other, "bob", "a shadow of his own")  # the line moves on
    retried = await env.run(activities.promote, promote)
    assert retried.conflict is None and retried.revision == moved.revision
    assert [h.to_version for h in registry.alias_history("production")].count(candidate) == 1
    assert registry.aliases()["shadow"] == other, "the retry undid bob's move"
    audit = await fetch_all(db_pool, "SELECT 1 FROM audit_log WHERE workflow_id = %s AND action = 'rollout.promote'",
                            rollout_id)
    assert len(audit) == 1
