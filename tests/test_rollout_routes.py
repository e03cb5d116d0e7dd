"""The rollout routes as ML engineers and ops use them: start (202, id from the candidate), a second start
refused while one runs, the state while it runs, pause and resume, role refusals with reasons, abort
putting production back, actions on a finished or unknown rollout refused, a bad plan answered 422,
and every action in the audit log."""

from __future__ import annotations

import pytest

from tests.polling import eventually
from tests.review_support import fetch_all
from vision.traffic import TrafficSplit

pytest_plugins = ["tests.serving_fixtures"]


@pytest.fixture
def restored(registry):
    """Other tests expect the session's production model and no split."""
    aliases = registry.aliases()
    yield registry
    registry.set_traffic(TrafficSplit(), "tests", "reset after a rollout route test")
    for alias in ("production", "candidate", "shadow"):
        registry.set_alias(alias, aliases.get(alias), "tests", "restore after a rollout route test")


async def test_a_rollout_through_the_api(api, restored, model_store, trained_model, production_model):
    from vision.publishing import register_trained

    registry = restored
    candidate = register_trained(registry, model_store, trained_model, created_by="tests").version
    ml, ops = api.auth("ml-engineer"), api.auth("ops")
    # Stages that cannot finish on their own: no traffic flows here, so the rollout waits in shadow.
    plan = {"candidate_version": candidate, "reason": "route test", "min_frames": 1_000_000, "poll_interval_s": 0.5}

    bad = await api.http.post("/v1/rollouts", json={**plan, "canary_steps": [0.5, 0.25]}, headers=ml)
    assert bad.status_code == 422 and "increasing" in bad.text
    assert (await api.http.post("/v1/rollouts", json=plan, headers=ops)).status_code == 403
    unknown = await api.http.post("/v1/rollouts", json={**plan, "candidate_version": "v999999"}, headers=ml)
    assert unknown.status_code == 404, unknown.text

    started = await api.http.post("/v1/rollouts", json=plan, headers=ml)
    assert started.status_code == 202, started.text
    rollout_id = started.json()["rollout_id"]
    assert rollout_id == f"rollout-{candidate}" and started.json()["status"] == "running"
    again = await api.http.post("/v1/rollouts", json=plan, headers=ml)
    assert again.status_code == 409, again.text

    async def shadowing() -> bool:
        body = (await api.http.get(f"/v1/rollouts/{rollout_id}", headers=ops)).json()
        stage = (body["state"] or {}).get("stage", "")
        return stage.startswith("shadow") and registry.traffic().shadow_version == candidate

    await eventually(shadowing, timeout=60, message="the rollout's shadow stage")

    async def listed() -> bool:  # the row follows the workflow's state: written by its next activity
        rows = (await api.http.get("/v1/rollouts", headers=ops)).json()["rollouts"]
        return rollout_id in {r["rollout_id"] for r in rows}

    await eventually(listed, timeout=30, message="the rollout in the listing")

    for role in ("ingest", "reviewer"):
        refused = await api.http.post(f"/v1/rollouts/{rollout_id}/pause", json={}, headers=api.auth(role))
        assert refused.status_code == 403, (role, refused.text)
    paused = await api.http.post(f"/v1/rollouts/{rollout_id}/pause", json={"reason": "shift change"}, headers=ops)
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    twice = await api.http.post(f"/v1/rollouts/{rollout_id}/pause", json={}, headers=ops)
    assert twice.status_code == 409 and "paused already" in twice.text
    ops_resume = await api.http.post(f"/v1/rollouts/{rollout_id}/resume", json={}, headers=ops)
    assert ops_resume.status_code == 403, ops_resume.text  # ops stop rollouts; ML engineers move them on
    resumed = await api.http.post(f"/v1/rollouts/{rollout_id}/resume", json={}, headers=ml)
    assert resumed.status_code == 200 and resumed.json()["status"] == "running", resumed.text
    no_approval = await api.http.post(f"/v1/rollouts/{rollout_id}/approve", json={}, headers=ml)
    assert no_approval.status_code == 409, no_approval.text  # this plan promotes without an approval

    aborted = await api.http.post(f"/v1/rollouts/{rollout_id}/abort", json={"reason": "line stopped"}, headers=ops)
    assert aborted.status_code == 200, aborted.text

    async def finished() -> bool:
        body = (await api.http.get(f"/v1/rollouts/{rollout_id}", headers=ml)).json()
        return body["status"] == "aborted"

    await eventually(finished, timeout=60, message="the aborted rollout's record")
    assert registry.aliases()["production"] == production_model.version
    assert registry.traffic().shadow_version is None and not registry.traffic().weights
    after = await api.http.post(f"/v1/rollouts/{rollout_id}/rollback", json={}, headers=ops)
    assert after.status_code in (404, 409), after.text
    assert (await api.http.post("/v1/rollouts/rollout-v999999/pause", json={}, headers=ops)).status_code == 404

    audit = await fetch_all(api.pool, "SELECT action, role FROM audit_log WHERE workflow_id = %s"
                            " AND action LIKE 'rollout.%%' ORDER BY at", rollout_id)
    actions = [(a["action"], a["role"]) for a in audit]
    # The callers' actions, and the workflow's own changes of the split (the shadow stage) and of the
    # aliases (putting everything back, in the name of whoever aborted), each once.
    assert [a for a in actions if a[0] != "rollout.traffic"] == [
        ("rollout.start", "ml-engineer"), ("rollout.pause", "ops"), ("rollout.resume", "ml-engineer"),
        ("rollout.abort", "ops"), ("rollout.rollback", "ops")], actions
    assert actions.count(("rollout.traffic", None)) == 1, actions
