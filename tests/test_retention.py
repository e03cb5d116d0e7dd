"""Retention on the real stack (issue 24): a RetentionWorkflow removes what outlived its site's periods in
bounded, audited chunks (continuing as new), keeps what a site keeps for ever, and keeps the frames a
registered model that is not retired was trained on until it is retired (the hold is on its model card)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import ScheduleIntervalSpec

from tests.deletion_support import exists, seed_batch, seed_drift_report, seed_review_task, seed_trained_model
from vision.registry import ModelRegistry
from workers.retention import ensure_retention_schedule
from workflows.deletion_types import RETENTION_SCHEDULE_ID, RetentionInput
from workflows.retention import RetentionWorkflow


async def _run_retention(api, chunk_size: int = 2, chunks_per_run: int = 2):
    handle = await api.client.start_workflow(
        RetentionWorkflow.run, RetentionInput(chunk_size=chunk_size, chunks_per_run=chunks_per_run),
        id=f"retention-test-{uuid.uuid4().hex[:8]}", task_queue=api.settings.orchestration_task_queue)
    return handle, await handle.result()


async def test_retention_removes_what_expired_and_keeps_what_is_held(api, record_history):
    site, forever = f"r{uuid.uuid4().hex[:6]}", f"f{uuid.uuid4().hex[:6]}"
    admin, engineer = api.auth("admin"), api.auth("ml-engineer")
    # This site keeps frames 30 days, predictions 10; the other keeps frames for ever.
    put = await api.http.put(f"/v1/sites/{site}/retention", json={"frames_days": 30, "predictions_days": 10},
                             headers=admin)
    assert put.status_code == 200, put.text
    assert put.json()["effective"] == {"frames_days": 30, "predictions_days": 10, "review_tasks_days": 180,
                                       "drift_reports_days": 365}
    kept = await api.http.put(f"/v1/sites/{forever}/retention", json={"frames_days": 0}, headers=admin)
    assert kept.status_code == 200
    assert (await api.http.put(f"/v1/sites/{site}/retention", json={"frames_days": -1},
                               headers=admin)).status_code == 422
    assert (await api.http.put(f"/v1/sites/{site}/retention", json={}, headers=api.auth("ops"))).status_code == 403

    old = await seed_batch(api.pool, api.store, "cam", site, 5, age_days=40)
    young = await seed_batch(api.pool, api.store, "cam", site, 2, age_days=15)  # frames stay, predictions go
    fresh = await seed_batch(api.pool, api.store, "cam", site, 1)
    kept_for_ever = await seed_batch(api.pool, api.store, "cam", forever, 1, age_days=400)
    held = old.frames[0]
    registry = ModelRegistry(api.settings.database_url)
    version, _ = await seed_trained_model(api.pool, api.store, registry, [held])
    old_review = await seed_review_task(api.pool, young.frames[0], "cam", site, decided=True, age_days=200)
    report_id, html_key = await seed_drift_report(api.pool, api.store, site, age_days=400)

    card = (await api.http.get(f"/v1/models/{version}", headers=engineer)).json()
    assert card["data"]["retention_hold"] == {"frames_held": 1, "snapshot_id": card["dataset_snapshot_id"],
                                              "active": True}

    handle, result = await _run_retention(api)
    assert result.removed["frames"] >= 4 and result.removed["review_tasks"] >= 1
    first_run = await api.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id).fetch_history()
    assert first_run.events[-1].HasField("workflow_execution_continued_as_new_event_attributes"), \
        "chunks of 2, 2 chunks a run: the pass continued as new"
    frames_left = await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", old.batch_id)
    assert frames_left == 1, "the held frame stays"
    assert api.store.exists(held.object_key)
    assert not any(api.store.exists(f.object_key) for f in old.frames[1:])
    assert await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", young.batch_id) == 2
    assert await exists(api.pool, "SELECT count(*) FROM predictions WHERE frame_id = ANY(%s)",
                        [f.frame_id for f in young.frames]) == 0
    assert await exists(api.pool, "SELECT count(*) FROM predictions WHERE frame_id = %s", fresh.frames[0].frame_id) == 1
    assert await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", kept_for_ever.batch_id) == 1
    assert await exists(api.pool, "SELECT count(*) FROM review_tasks WHERE review_id = %s", old_review) == 0
    assert await exists(api.pool, "SELECT count(*) FROM drift_reports WHERE report_id = %s", report_id) == 0
    assert not api.store.exists(html_key)
    async with api.pool.connection() as conn:
        chunks = await (await conn.execute(
            "SELECT details FROM audit_log WHERE action = 'retention.chunk' AND workflow_id = %s",
            (handle.id,))).fetchall()
    assert len(chunks) >= 3 and all(c["details"]["counts"] for c in chunks)
    assert sum(c["details"]["counts"].get("frames", 0) for c in chunks if c["details"]["kind"] == "frames") >= 4
    async with api.pool.connection() as conn:
        audited = await (await conn.execute(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'retention.set' AND resource = %s",
            (f"sites/{site}/retention",))).fetchone()
    assert audited and audited["n"] == 1
    await record_history(handle, "retention_expired_in_chunks")

    # Retiring the model ends the hold: the next pass removes the frame.
    retired = await api.http.post(f"/v1/models/{version}/retire", json={"reason": "superseded"}, headers=engineer)
    assert retired.status_code == 200, retired.text
    assert (await api.http.post(f"/v1/models/{version}/retire", headers=api.auth("ops"))).status_code == 403
    card = (await api.http.get(f"/v1/models/{version}", headers=engineer)).json()
    assert card["data"]["retention_hold"]["active"] is False and card["data"]["retired"]["reason"] == "superseded"
    await _run_retention(api, chunk_size=50)
    assert await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", old.batch_id) == 0
    assert not api.store.exists(held.object_key)


async def test_the_retention_schedule_is_created_from_the_settings(api):
    settings = api.settings.model_copy(update={"retention_interval_s": 1234.0})
    try:
        assert await ensure_retention_schedule(api.client, settings) in ("created", "updated")
        described = await api.client.get_schedule_handle(RETENTION_SCHEDULE_ID).describe()
        [interval] = described.schedule.spec.intervals
        assert interval == ScheduleIntervalSpec(every=timedelta(seconds=1234))
        assert await ensure_retention_schedule(api.client, settings) == "updated"
    finally:
        await api.client.get_schedule_handle(RETENTION_SCHEDULE_ID).delete()
