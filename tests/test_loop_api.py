"""The loop's routes: drift checks started and their reports read (with Evidently's HTML for authorised
keys), retraining triggered (a second trigger for the same snapshot starts nothing), followed and
cancelled, model versions with their cards. Every mutating call is audited."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus

from infra.tables import drift_report_columns, drift_reports
from tests.review_support import fetch_all

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


async def _report(api, site: str, status: str = "drift") -> str:
    """A drift report as a check leaves it, HTML included."""
    from datetime import UTC, datetime

    report_id = f"drift-{site}-{uuid.uuid4().hex[:6]}"
    html_key = f"drift-reports/{report_id}.html"
    api.store.put(html_key, b"<html><body>evidently report</body></html>", "text/html")
    async with api.pool.connection() as conn:
        await drift_reports.upsert(conn, {
            "report_id": report_id, "run_id": "r", "site_id": site, "model_version": "v1", "status": status,
            "drift_share": 0.6, "drifted_columns": 6, "total_columns": 10, "reference_frames": 160,
            "current_frames": 300, "current_from": None, "current_until": None, "unfamiliar_rate_reference": 0.0,
            "unfamiliar_rate_current": 0.8, "html_key": html_key, "requested_by": "tests",
            "checked_at": datetime.now(UTC)})
        await drift_report_columns.replace(conn, report_id, [
            drift_report_columns.ColumnResult("brightness", "numerical", "ks", 0.01, 1e-20, True),
            drift_report_columns.ColumnResult("label", "categorical", "chisquare", 0.01, 0.4, False)])
    return report_id


async def test_drift_reports_are_listed_and_read_with_their_html(api):
    site = f"plant-{uuid.uuid4().hex[:6]}"
    report_id = await _report(api, site)
    ops = api.auth("ops")
    listed = (await api.http.get("/v1/drift-reports", params={"site_id": site}, headers=ops)).json()
    assert [r["report_id"] for r in listed["reports"]] == [report_id]
    assert listed["reports"][0]["html_url"] == f"/v1/drift-reports/{report_id}/html"
    detail = (await api.http.get(f"/v1/drift-reports/{report_id}", headers=api.auth("ml-engineer"))).json()
    assert detail["status"] == "drift" and detail["drift_share"] == 0.6
    assert [c["column_name"] for c in detail["columns"]] == ["brightness", "label"]
    assert detail["columns"][0]["drifted"] is True and detail["policy"] is None
    html = await api.http.get(f"/v1/drift-reports/{report_id}/html", headers=ops)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert b"evidently" in html.content and "sandbox" in html.headers["content-security-policy"]
    refused = await api.http.get(f"/v1/drift-reports/{report_id}/html", headers=api.auth("reviewer"))
    assert refused.status_code == 403
    assert (await api.http.get("/v1/drift-reports/nope", headers=ops)).status_code == 404


async def test_a_drift_check_is_started_on_demand_and_audited(api):
    site = f"plant-{uuid.uuid4().hex[:6]}"
    response = await api.http.post("/v1/drift-checks", json={"site_id": site}, headers=api.auth("ops"))
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    assert workflow_id.startswith(f"drift-{site}-") and response.json()["report_url"].endswith(workflow_id)
    handle = api.client.get_workflow_handle(workflow_id)
    try:
        assert (await handle.describe()).workflow_type == "DriftCheckWorkflow"
    finally:
        await handle.terminate("test: started, not run")
    audit = await fetch_all(api.pool, "SELECT action, role FROM audit_log WHERE workflow_id = %s", workflow_id)
    assert audit == [{"action": "drift_check.start", "role": "ops"}]
    bad = await api.http.post("/v1/drift-checks", json={"site_id": "../etc"}, headers=api.auth("ops"))
    assert bad.status_code == 422


@pytest.mark.settings(retraining_profile="micro")
async def test_a_second_trigger_for_the_same_snapshot_starts_nothing(api):
    ml = api.auth("ml-engineer")
    # A snapshot of its own: the id is the dataset's content, and the Temporal server is the session's
    # (the fuzz test may have started a run for the empty dataset already).
    from tests.loop_support import record_reviewed_frames, shifted_frames

    await record_reviewed_frames(api.pool, api.app.state.store, shifted_frames(f"cam-{uuid.uuid4().hex[:8]}", 1, 3))
    first = await api.http.post("/v1/retraining", json={"note": "the camera changed", "epochs": 2}, headers=ml)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["started"] is True and body["workflow_id"] == f"retraining-{body['snapshot_id']}"
    handle = api.client.get_workflow_handle(body["workflow_id"])
    try:
        second = await api.http.post("/v1/retraining", json={"note": "again"}, headers=ml)
        assert second.status_code == 200 and second.json()["started"] is False
        assert second.json()["workflow_id"] == body["workflow_id"]
        runs = [e async for e in api.client.list_workflows(f"WorkflowId = '{body['workflow_id']}'")]
        assert len(runs) == 1
        state = (await api.http.get(f"/v1/retraining/{body['workflow_id']}", headers=api.auth("ops"))).json()
        assert state["snapshot_id"] == body["snapshot_id"] and state["status"] == "running"
        cancel = await api.http.post(f"/v1/retraining/{body['workflow_id']}/cancel", headers=ml)
        assert cancel.status_code == 202
    finally:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test: started, not run")
    audit = await fetch_all(api.pool, "SELECT action, details FROM audit_log WHERE workflow_id = %s ORDER BY at",
                            body["workflow_id"])
    assert [(a["action"], a["details"].get("started")) for a in audit] == [
        ("retraining.start", True), ("retraining.start", False), ("retraining.cancel", None)]
    assert audit[0]["details"]["note"] == "the camera changed" and audit[0]["details"]["params"]["epochs"] == 2
    assert (await api.http.post("/v1/retraining", json={}, headers=ml)).status_code == 422  # a note is required


async def test_model_versions_show_their_cards(api, registry, model_store, trained_model, production_model):
    from vision.publishing import model_card, register_trained

    card = model_card(trained_model, reason={"kind": "manual", "requested_by": "tests", "note": "api test"},
                      data={"snapshot_id": "snap-test", "counts": {"by_source": {"generated": 10}}})
    version = register_trained(registry, model_store, trained_model, parent_version=production_model.version,
                               created_by="tests", card=card)
    ops = api.auth("ops")
    listed = (await api.http.get("/v1/models", headers=ops)).json()["models"]
    assert {m["version"] for m in listed} >= {production_model.version, version.version}
    production = next(m for m in listed if m["version"] == production_model.version)
    assert "production" in production["aliases"]
    detail = (await api.http.get(f"/v1/models/{version.version}", headers=api.auth("ml-engineer"))).json()
    assert detail["card"]["reason"]["note"] == "api test" and detail["card"]["version"] == version.version
    assert detail["card"]["parent_version"] == production_model.version and detail["signature_key_id"]
    assert detail["card"]["data"]["counts"]["by_source"] == {"generated": 10}
    assert detail["card"]["novelty"]["percentile"] == 99.5
    by_alias = (await api.http.get("/v1/models/production", headers=ops)).json()
    assert by_alias["version"] == production_model.version
    assert (await api.http.get("/v1/models/v999999", headers=ops)).status_code == 404
