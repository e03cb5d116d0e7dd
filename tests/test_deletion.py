"""Deletion requests on the real stack (issue 24): a camera's frames and every copy and reference of them
go, the verifier proves it (and catches a leftover planted after), resubmission is idempotent, bad input is
4xx with a reason, frames a model in rollout was trained on are refused without `force` and the rollout is
aborted with it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from activities.deletion_verifier import verify_deletion
from activities.frame_purge import delete_objects, delete_rows
from infra.store import frame_key
from infra.tables import deletions, rollouts
from tests.deletion_support import (
    exists,
    seed_batch,
    seed_drift_report,
    seed_review_task,
    seed_trained_model,
)
from tests.polling import eventually
from vision.registry import ModelRegistry
from workflows.deletion_types import PROGRESS_QUERY, DeletionProgress
from workflows.rollout_types import RolloutAction


@workflow.defn(name="ReviewTaskWorkflow", sandboxed=False)
class OpenReviewTask:
    """An open review task's workflow, waiting for a reviewer (the deletion must end it)."""

    @workflow.run
    async def run(self, _: dict) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn(name="ModelRolloutWorkflow", sandboxed=False)
class RolloutInProgress:
    """A rollout between stages: it stops on `abort`, recording who and why."""

    def __init__(self) -> None:
        self.aborted: RolloutAction | None = None

    @workflow.run
    async def run(self, _: dict) -> str:
        await workflow.wait_condition(lambda: self.aborted is not None)
        assert self.aborted is not None
        return self.aborted.reason

    @workflow.update
    def abort(self, action: RolloutAction) -> str:
        self.aborted = action
        return "aborted"


async def _finished(api, deletion_id: str) -> dict:
    await asyncio.wait_for(api.client.get_workflow_handle(deletion_id).result(), 120)
    response = await api.http.get(f"/v1/deletions/{deletion_id}", headers=api.auth("admin"))
    assert response.status_code == 200, response.text
    return response.json()


def _cli_verify(deletion_id: str) -> Result:
    from cli.main import app

    return CliRunner().invoke(app, ["deletions", "verify", deletion_id], env={"COLUMNS": "200"})


async def test_a_camera_deletion_removes_everything_and_the_verifier_proves_it(api, record_history, monkeypatch):
    site, camera = f"s{uuid.uuid4().hex[:6]}", "dock-cam"
    doomed = await seed_batch(api.pool, api.store, camera, site, 4)
    second = await seed_batch(api.pool, api.store, camera, site, 2)
    kept = await seed_batch(api.pool, api.store, "other-cam", site, 2)
    frame = doomed.frames[0]
    await seed_review_task(api.pool, doomed.frames[1], camera, site, decided=True)
    review_queue = f"{api.settings.orchestration_task_queue}-reviews"
    open_review = await seed_review_task(api.pool, frame, camera, site, decided=False,
                                         review_id=f"review:{frame.frame_id}:qa")
    registry = ModelRegistry(api.settings.database_url)
    version, snapshot = await seed_trained_model(api.pool, api.store, registry, [frame, kept.frames[0]])
    report_id, html_key = await seed_drift_report(api.pool, api.store, site)
    detail = (await api.http.get(f"/v1/frames/{frame.frame_id}", headers=api.auth("ops"))).json()
    signed = detail["image_url"].removeprefix("http://sightline.test")
    assert (await api.http.get(signed)).status_code == 200

    async with Worker(api.client, task_queue=review_queue, workflows=[OpenReviewTask]):
        review = await api.client.start_workflow("ReviewTaskWorkflow", {}, id=open_review, task_queue=review_queue)
        body = {"camera_id": camera, "site_id": site, "reason": "customer asked"}
        key = {"Idempotency-Key": f"k{uuid.uuid4().hex[:8]}"}
        response = await api.http.post("/v1/deletions", json=body, headers={**api.auth("admin"), **key})
        assert response.status_code == 202, response.text
        deletion_id = response.json()["deletion_id"]
        assert deletion_id == f"deletion:{site}:{key['Idempotency-Key']}"
        again = await api.http.post("/v1/deletions", json=body, headers={**api.auth("admin"), **key})
        assert again.status_code == 200 and again.json()["deletion_id"] == deletion_id
        other = await api.http.post("/v1/deletions", json={**body, "camera_id": "other-cam"},
                                    headers={**api.auth("admin"), **key})
        assert other.status_code == 409 and "another scope" in other.json()["detail"]

        done = await _finished(api, deletion_id)
        assert (await review.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert done["status"] == "completed" and done["verified"] is True, done
    assert done["frames_total"] == done["frames_deleted"] == 6
    counts = done["counts"]
    assert counts["frames"] == 6 and counts["predictions"] == 6 and counts["batches"] == 2
    assert counts["review_tasks"] == 2 and counts["review_workflows_ended"] == 1
    assert counts["objects"] == 6 and counts["drift_reports_rebuilt"] == 1
    assert counts["snapshots_marked"] == 1 and counts["models_recorded"] == 1
    progress = await api.client.get_workflow_handle(deletion_id).query(PROGRESS_QUERY, result_type=DeletionProgress)
    assert progress.status == "completed" and progress.frames_deleted == 6

    # every copy and reference: objects, rows, the signed URL, the drift report's samples
    for f in doomed.frames + second.frames:
        assert not api.store.exists(f.object_key)
    assert await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = ANY(%s)",
                        [doomed.batch_id, second.batch_id]) == 0
    assert (await api.http.get(signed)).status_code == 404
    assert not api.store.exists(html_key)
    assert await exists(api.pool, "SELECT count(*) FROM drift_reports WHERE report_id = %s"
                        " AND samples_removed_by = %s AND html_key IS NULL", report_id, deletion_id) == 1
    # what stays: the other camera's frames; the snapshot marked, the model card records it
    assert all(api.store.exists(f.object_key) for f in kept.frames)
    assert await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", kept.batch_id) == 2
    assert await exists(api.pool, "SELECT deleted_frames FROM dataset_snapshots WHERE snapshot_id = %s",
                        snapshot) == 1
    card = (await api.http.get(f"/v1/models/{version}", headers=api.auth("ml-engineer"))).json()
    [recorded] = card["data"]["deletions"]
    assert recorded["deletion_id"] == deletion_id and recorded["frames"] == 1
    assert recorded["requested_by"].startswith("test admin")
    # the audit log: the request and the counts, never a frame
    async with api.pool.connection() as conn:
        audited = await (await conn.execute(
            "SELECT action, details::text AS d FROM audit_log WHERE workflow_id = %s ORDER BY audit_id",
            (deletion_id,))).fetchall()
    actions = [a["action"] for a in audited]
    assert actions[0] == "deletion.request" and "deletion.chunk" in actions and actions[-1] == "deletion.completed"
    assert not any(f.frame_id in a["d"] or f.sha256 in a["d"] for a in audited for f in doomed.frames)

    report = await verify_deletion(api.pool, api.store, deletion_id)
    assert report.ok and report.frames == 6 and report.marked == [snapshot], report.summary()
    assert report.checked_tables > 20
    from infra.settings import get_settings

    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", api.settings.database_url)
    monkeypatch.setenv("SIGHTLINE_OBJECT_STORE_URL", api.settings.resolved_object_store_url)
    get_settings.cache_clear()
    planted = f"planted-{uuid.uuid4().hex[:6]}"
    try:
        cli = await asyncio.to_thread(_cli_verify, deletion_id)  # the command runs its own event loop
        assert cli.exit_code == 0 and "nothing remains" in cli.output, cli.output

        # a leftover planted afterwards is caught: an object at a frame's content address, a row naming it
        api.store.put(frame_key(frame.sha256), b"copy", "image/jpeg")
        async with api.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO review_escalations (review_id, frame_id, batch_id, camera_id, reason, priority_before,"
                " priority_after, sla_due_at, escalated_at) VALUES (%s, %s, %s, %s, 'sla', 1, 2, now(), now())",
                (planted, frame.frame_id, frame.batch_id, camera))
        caught = await verify_deletion(api.pool, api.store, deletion_id)
        assert not caught.ok
        assert any("review_escalations.frame_id" in x for x in caught.leftovers), caught.leftovers
        assert any(frame_key(frame.sha256) in x for x in caught.leftovers), caught.leftovers
        cli = await asyncio.to_thread(_cli_verify, deletion_id)
        assert cli.exit_code == 1 and "review_escalations.frame_id" in cli.output, cli.output
        assert (await asyncio.to_thread(_cli_verify, "deletion:all:nothing")).exit_code == 2
    finally:
        get_settings.cache_clear()
        async with api.pool.connection() as conn:
            await conn.execute("DELETE FROM review_escalations WHERE review_id = %s", (planted,))
        if api.store.exists(frame_key(frame.sha256)):
            api.store.delete(frame_key(frame.sha256))
    await record_history(api.client.get_workflow_handle(deletion_id), "deletion_camera_removed")


async def test_bad_requests_answer_4xx_with_a_reason(api):
    site = f"s{uuid.uuid4().hex[:6]}"
    await seed_batch(api.pool, api.store, "cam-a", site, 1)
    admin = api.auth("admin")

    async def post(body: dict) -> tuple[int, str]:
        r = await api.http.post("/v1/deletions", json=body, headers=admin)
        return r.status_code, r.text

    code, text = await post({"camera_id": "no-such-camera", "site_id": site})
    assert code == 404 and "camera_id" in text and "no-such-camera" in text
    code, text = await post({"site_id": "no-such-site"})
    assert code == 404 and "site_id" in text
    code, text = await post({})
    assert code == 422 and "camera_id" in text
    now = datetime.now(UTC)
    code, text = await post({"site_id": site, "created_from": now.isoformat(),
                             "created_until": (now - timedelta(hours=1)).isoformat()})
    assert code == 422 and "created_until" in text
    code, text = await post({"site_id": site, "created_from": (now + timedelta(days=1)).isoformat()})
    assert code == 422 and "names no frames" in text
    code, text = await post({"batch_ids": ["batch:nope:nope:1"]})
    assert code == 404 and "batch_ids" in text
    running = await seed_batch(api.pool, api.store, "cam-b", site, 1)
    async with api.pool.connection() as conn:
        await conn.execute("UPDATE batches SET status = 'running' WHERE batch_id = %s", (running.batch_id,))
    code, text = await post({"site_id": site, "camera_id": "cam-b"})
    assert code == 409 and running.batch_id in text and "still running" in text
    async with api.pool.connection() as conn:  # no batch left in flight for the site's admission
        await conn.execute("UPDATE batches SET status = 'completed' WHERE batch_id = %s", (running.batch_id,))
    r = await api.http.post("/v1/deletions", json={"site_id": site}, headers=api.auth("ops"))
    assert r.status_code == 403
    r = await api.http.get("/v1/deletions/deletion:all:missing", headers=admin)
    assert r.status_code == 404


async def test_frames_held_by_a_model_in_rollout_are_refused_unless_forced(api):
    site = f"s{uuid.uuid4().hex[:6]}"
    batch = await seed_batch(api.pool, api.store, "cam-r", site, 2)
    registry = ModelRegistry(api.settings.database_url)
    version, _ = await seed_trained_model(api.pool, api.store, registry, batch.frames[:1])
    rollout_id = f"rollout-{version}-{uuid.uuid4().hex[:4]}"
    queue = f"{api.settings.orchestration_task_queue}-rollout"
    async with Worker(api.client, task_queue=queue, workflows=[RolloutInProgress]):
        rollout = await api.client.start_workflow("ModelRolloutWorkflow", {}, id=rollout_id, task_queue=queue)
        async with api.pool.connection() as conn:
            await rollouts.upsert(conn, rollout_id=rollout_id, candidate_version=version, previous_version=None,
                                  status="running", stage="canary", split={}, gates=[], reason=None,
                                  requested_by="test", started_at=datetime.now(UTC), finished_at=None)
        try:
            body = {"batch_ids": [batch.batch_id]}
            refused = await api.http.post("/v1/deletions", json=body, headers=api.auth("admin"))
            assert refused.status_code == 409, refused.text
            assert rollout_id in refused.json()["detail"] and "force" in refused.json()["detail"]
            assert await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", batch.batch_id) == 2

            forced = await api.http.post("/v1/deletions", json={**body, "force": True}, headers=api.auth("admin"))
            assert forced.status_code == 202, forced.text
            deletion_id = forced.json()["deletion_id"]
            reason = await asyncio.wait_for(rollout.result(), 60)
            assert deletion_id in reason and "trained on" in reason
            done = await _finished(api, deletion_id)
            assert done["aborted_rollouts"] == [rollout_id] and done["verified"] is True
            assert done["frames_deleted"] == 2
        finally:
            async with api.pool.connection() as conn:
                await conn.execute("UPDATE rollouts SET status = 'aborted' WHERE rollout_id = %s", (rollout_id,))

    async def gone() -> bool:
        return await exists(api.pool, "SELECT count(*) FROM frames WHERE batch_id = %s", batch.batch_id) == 0

    await eventually(gone, 10, "the forced deletion's frames to be gone")


def _start_deletion_worker(settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ,
           "SIGHTLINE_DATABASE_URL": settings.database_url,
           "SIGHTLINE_OBJECT_STORE_URL": settings.resolved_object_store_url,
           "SIGHTLINE_TEMPORAL_ADDRESS": settings.temporal_address,
           "SIGHTLINE_ORCHESTRATION_TASK_QUEUE": settings.orchestration_task_queue}
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.deletion_worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def test_a_deletion_survives_its_worker_killed_and_resumes(settings_factory, temporal_client, db_pool,
                                                                 api_keys, tmp_path):
    from api.main import create_app

    frames = 12
    settings = settings_factory(deletion_chunk_size=1, deletion_chunks_per_run=4)  # continues as new too
    app = create_app(settings, temporal_client=temporal_client)
    first = _start_deletion_worker(settings, tmp_path / "worker-1.log")
    second = None
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60,
                headers={"Authorization": f"Bearer {api_keys['admin']}"}) as http:
            site = f"s{uuid.uuid4().hex[:6]}"
            batch = await seed_batch(db_pool, app.state.store, "crash-cam", site, frames)
            response = await http.post("/v1/deletions", json={"site_id": site, "camera_id": "crash-cam"})
            assert response.status_code == 202, response.text
            deletion_id = response.json()["deletion_id"]

            async def some_deleted() -> int:
                assert first.poll() is None, (tmp_path / "worker-1.log").read_text()
                return await exists(db_pool, "SELECT frames_deleted FROM deletion_requests WHERE deletion_id = %s",
                                    deletion_id)

            done = await eventually(some_deleted, 60, "the first worker to delete a chunk", interval=0.02)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            assert done < frames, "the deletion finished before its worker could be killed"

            second = _start_deletion_worker(settings, tmp_path / "worker-2.log")
            await asyncio.wait_for(temporal_client.get_workflow_handle(deletion_id).result(), 120)
            row = (await http.get(f"/v1/deletions/{deletion_id}")).json()
            assert row["status"] == "completed" and row["verified"] is True, row
            assert row["frames_deleted"] == frames and row["counts"]["frames"] == frames, "each frame counted once"
            assert await exists(db_pool, "SELECT count(*) FROM frames WHERE batch_id = %s", batch.batch_id) == 0
            assert not any(app.state.store.exists(f.object_key) for f in batch.frames)
            report = await verify_deletion(db_pool, app.state.store, deletion_id)
            assert report.ok and report.frames == frames
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)


async def test_purge_and_the_verifier_work_on_the_s3_store(db_pool, s3_store):
    """The same removal and walk against the S3-protocol store production uses (moto's server here)."""
    site = f"s{uuid.uuid4().hex[:6]}"
    batch = await seed_batch(db_pool, s3_store, "s3-cam", site, 3)
    deletion_id = f"deletion:{site}:s3"
    scope: dict[str, Any] = {"site_id": site, "camera_id": "s3-cam", "created_from": None, "created_until": None,
                             "batch_ids": []}
    async with db_pool.connection() as conn:
        await deletions.create(conn, deletion_id=deletion_id, idempotency_key="s3", fingerprint="f", scope=scope,
                               force=False, reason="", requested_by="test")
        assert await deletions.fill_ledger(conn, deletion_id, scope) == 3
        rows = await deletions.pending(conn, deletion_id, 10)
    assert await delete_objects(db_pool, s3_store, rows) == 3
    async with db_pool.connection() as conn, conn.transaction():
        counts = await delete_rows(conn, rows)
        await deletions.mark_purged(conn, deletion_id, [r["frame_id"] for r in rows])
    assert counts["frames"] == 3 and counts["batches"] == 1 and counts["predictions"] == 3
    assert not any(s3_store.exists(f.object_key) for f in batch.frames)
    assert (await verify_deletion(db_pool, s3_store, deletion_id)).ok
    s3_store.put(batch.frames[0].object_key, b"left behind")
    caught = await verify_deletion(db_pool, s3_store, deletion_id)
    assert caught.leftovers == [f"store object {batch.frames[0].object_key} is one of the deleted frames"]
