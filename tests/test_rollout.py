"""ModelRolloutWorkflow end to end on short stages, against live traffic recorded under the registry's
split: a good candidate goes through shadow and canary steps and is promoted (after an approval, with a
pause and resume on the way); a worse one is rolled back automatically at the shadow gate, with a signed
rollout.rolled_back webhook; an abort puts everything back; a second start for the same candidate is
refused while one runs; every alias change is in the registry history and the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from infra.settings import Settings
from infra.webhook_signatures import SIGNATURE_HEADER
from tests.history_recorder import HistoryRecorder
from tests.loop_support import loop_workers
from tests.polling import eventually
from tests.rollout_support import GOOD, SHUFFLED, LiveTraffic
from tests.webhook_receiver import Receiver
from vision.traffic import TrafficSplit
from workflows.rollout import ModelRolloutWorkflow
from workflows.rollout_types import (
    STATE_QUERY,
    RolloutAction,
    RolloutInput,
    RolloutState,
    RolloutStatus,
    plan_from,
    rollout_workflow_id,
)

pytest_plugins = ["tests.serving_fixtures", "tests.loop_support"]

FAST = dict(shadow_share=0.5, canary_steps=[0.1, 0.5], min_frames=30, min_duration_s=0.5, poll_interval_s=0.3)


@pytest_asyncio.fixture
async def rollout_env(temporal_client, db_pool, model_store, registry, production_model, trained_model,
                      settings_factory) -> AsyncIterator[tuple[Settings, Receiver]]:
    with Receiver([]) as receiver:
        settings = settings_factory(rollout_webhook_url=receiver.url, **{f"rollout_{k}": v for k, v in {
            "shadow_share": 0.5, "canary_steps": [0.1, 0.5], "stage_min_frames": 30, "stage_min_duration_s": 0.5,
            "poll_interval_s": 0.3}.items()})
        aliases = registry.aliases()
        try:
            async with loop_workers(temporal_client, db_pool, model_store, settings, registry, training=False):
                yield settings, receiver
        finally:  # other tests expect the session's production model and no split
            registry.set_traffic(TrafficSplit(), "tests", "reset after a rollout test")
            for alias in ("production", "candidate", "shadow"):
                registry.set_alias(alias, aliases.get(alias), "tests", "restore after a rollout test")


def _candidate(registry, model_store, trained_model) -> str:
    from vision.publishing import register_trained

    return register_trained(registry, model_store, trained_model, created_by="tests").version


async def _start(client: Client, settings: Settings, candidate: str, **overrides) -> tuple:
    plan: RolloutInput = plan_from(candidate, settings.rollout_defaults(), "tests", "test rollout", **overrides)
    handle = await client.start_workflow(ModelRolloutWorkflow.run, plan, id=rollout_workflow_id(candidate),
                                         task_queue=settings.orchestration_task_queue)
    return handle, plan


async def _state(handle) -> RolloutState:
    return await handle.query(STATE_QUERY, result_type=RolloutState)


async def test_a_good_candidate_is_promoted_after_approval(rollout_env, temporal_client, db_pool, registry,
                                                           model_store, trained_model, production_model,
                                                           loop_history: HistoryRecorder):
    settings, _ = rollout_env
    production = production_model.version
    candidate = _candidate(registry, model_store, trained_model)
    traffic = LiveTraffic(db_pool, registry, {production: GOOD, candidate: GOOD})
    async with traffic.running():
        handle, _ = await _start(temporal_client, settings, candidate, require_approval=True)
        with pytest.raises(WorkflowAlreadyStartedError):  # one rollout per candidate at a time
            await _start(temporal_client, settings, candidate)

        async def in_canary():
            state = await _state(handle)
            return state if state.stage.startswith("canary") else None

        state = await eventually(in_canary, timeout=60, message="the first canary stage")
        assert state.gates[0].stage == "shadow 50%" and state.gates[0].passed
        assert state.gates[0].metrics.agreement is not None and state.gates[0].metrics.compared > 0
        # Pause holds the rollout where it is; resume lets it go on. A second pause is refused.
        paused = await handle.execute_update(ModelRolloutWorkflow.pause, RolloutAction("ops-1", "ops"))
        assert paused.paused and paused.status == RolloutStatus.PAUSED
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ModelRolloutWorkflow.pause, RolloutAction("ops-1", "ops"))
        gates = len(paused.gates)
        await asyncio.sleep(1.0)  # a pause: time passes and nothing moves
        assert len((await _state(handle)).gates) == gates and registry.aliases()["production"] == production
        with pytest.raises(WorkflowUpdateFailedError):  # ops may pause, not resume or approve
            await handle.execute_update(ModelRolloutWorkflow.resume, RolloutAction("ops-1", "ops"))
        await handle.execute_update(ModelRolloutWorkflow.resume, RolloutAction("mle", "ml-engineer"))

        async def awaiting():
            state = await _state(handle)
            return state if state.status == RolloutStatus.AWAITING_APPROVAL else None

        state = await eventually(awaiting, timeout=60, message="the approval gate")
        assert [g.stage for g in state.gates] == ["shadow 50%", "canary 10%", "canary 50%"]
        assert registry.aliases()["production"] == production and state.split == {candidate: 0.5, production: 0.5}
        await handle.execute_update(ModelRolloutWorkflow.approve, RolloutAction("mle", "ml-engineer"))
        result = await asyncio.wait_for(handle.result(), 60)
    await loop_history(handle, "model_rollout_promoted")

    assert result.status == RolloutStatus.PROMOTED and result.approved_by == "mle"
    assert registry.aliases()["production"] == candidate and "shadow" not in registry.aliases()
    assert registry.traffic().weights == ()
    assert traffic.by_version.get(candidate, 0) > 0
    history = registry.alias_history("production")
    assert history[-1].from_version == production and history[-1].to_version == candidate
    assert any(h["weights"] == [{"version": candidate, "weight": 0.1}, {"version": production, "weight": 0.9}]
               for h in registry.traffic_history())
    async with db_pool.connection() as conn:
        row = await (await conn.execute("SELECT * FROM rollouts WHERE rollout_id = %s", (handle.id,))).fetchone()
        audit = await (await conn.execute("SELECT action FROM audit_log WHERE workflow_id = %s AND"
                                          " action = 'rollout.promote'", (handle.id,))).fetchall()
    assert row["status"] == "promoted" and len(row["gates"]) == 3 and row["previous_version"] == production
    assert len(audit) == 1


async def test_a_worse_candidate_is_rolled_back_at_the_shadow_gate(rollout_env, temporal_client, db_pool, registry,
                                                                   model_store, trained_model, production_model):
    settings, receiver = rollout_env
    production = production_model.version
    candidate = _candidate(registry, model_store, trained_model)
    registry.set_alias("candidate", candidate, "tests", "handed over")
    async with LiveTraffic(db_pool, registry, {production: GOOD, candidate: SHUFFLED}).running():
        handle, _ = await _start(temporal_client, settings, candidate)
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == RolloutStatus.ROLLED_BACK and len(result.gates) == 1
    gate = result.gates[0]
    assert not gate.passed and gate.stage == "shadow 50%"
    failed = {c.name for c in gate.checks if not c.passed}
    assert {"agreement", "low_confidence_rate"} <= failed and "agreement" in (result.reason or "")
    assert registry.aliases()["production"] == production and registry.traffic().weights == ()
    assert "shadow" not in registry.aliases() and "candidate" not in registry.aliases()

    # The signed rollout.rolled_back webhook, delivered by its own workflow.
    await eventually(lambda: asyncio.sleep(0, result=bool(receiver.requests)), timeout=60, message="the webhook")
    headers, body = receiver.requests[-1]
    payload = json.loads(body)
    assert payload["event"] == "rollout.rolled_back" and SIGNATURE_HEADER.lower() in headers
    assert payload["data"]["candidate_version"] == candidate and "agreement" in payload["data"]["reason"]


async def test_an_abort_puts_everything_back(rollout_env, temporal_client, db_pool, registry, model_store,
                                             trained_model, production_model):
    settings, _ = rollout_env
    production = production_model.version
    candidate = _candidate(registry, model_store, trained_model)
    async with LiveTraffic(db_pool, registry, {production: GOOD, candidate: GOOD}).running():
        handle, _ = await _start(temporal_client, settings, candidate, min_frames=1_000_000)

        async def shadowing():
            return registry.traffic().shadow_version == candidate

        await eventually(shadowing, timeout=30, message="the shadow split")
        await handle.execute_update(ModelRolloutWorkflow.abort, RolloutAction("ops-1", "ops", "line stopped"))
        result = await asyncio.wait_for(handle.result(), 30)
    assert result.status == RolloutStatus.ABORTED and result.reason == "line stopped"
    assert registry.traffic().shadow_version is None and registry.aliases()["production"] == production
    with pytest.raises(RPCError) as finished:  # finished: no update reaches it any more
        await handle.execute_update(ModelRolloutWorkflow.rollback, RolloutAction("ops-1", "ops"))
    assert finished.value.status == RPCStatusCode.NOT_FOUND
