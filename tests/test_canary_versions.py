"""A canary's frames are the candidate's: every frame carries the version that answered it through the
batch's totals, its result, its review task and the reviewer's label, so a rollout's gates judge the
candidate on its own answers and production is never credited with them."""

from __future__ import annotations

import asyncio

from infra.store import frame_key, sha256_hex
from tests.frames import jpeg_frame, multipart
from tests.history_recorder import HistoryRecorder
from tests.polling import eventually
from workflows import search_attributes as sa
from workflows.batch_types import FrameBatchResult
from workflows.review_types import review_workflow_id

CANDIDATE = "v-cand"


async def test_each_frame_keeps_the_version_that_answered_it(api, record_history: HistoryRecorder):
    production = api.classifier.model_version
    frames = [jpeg_frame(9800 + i) for i in range(5)]
    answers = [("ok", 0.99, ""), ("ok", 0.99, CANDIDATE), ("scratch", 0.55, CANDIDATE), ("dent", 0.97, CANDIDATE),
               ("dent", 0.5, "")]
    for data, (label, confidence, version) in zip(frames, answers, strict=True):
        api.classifier.script(frame_key(sha256_hex(data)), label, confidence, version=version)
    response = await api.http.post("/v1/batches", data={"camera_id": "canary", "site_id": "canary-site",
                                                        "idempotency_key": "c1"},
                                   files=multipart([(f"f{i}.jpg", d, "image/jpeg") for i, d in enumerate(frames)]))
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    result = await asyncio.wait_for(
        api.client.get_workflow_handle(batch_id, result_type=FrameBatchResult).result(), 60)
    assert result.version_counts == {production: 2, CANDIDATE: 3}
    assert result.label_counts == {"ok": 2, "scratch": 1, "dent": 2}

    batch = (await api.http.get(f"/v1/batches/{batch_id}")).json()
    assert batch["version_counts"] == {production: 2, CANDIDATE: 3}
    assert batch["label_counts"] == {"ok": 2, "scratch": 1, "dent": 2}, "the canary's frames are counted too"
    assert batch["model_version"] == production

    # The candidate's uncertain frame goes to review as the candidate's answer, and so does its label.
    frame_id = batch["frames"][2]["frame_id"]
    review_id = review_workflow_id(frame_id, "low_confidence")
    reviewer = api.auth("reviewer")

    async def listed() -> dict | None:
        found = await api.http.get(f"/v1/reviews/{review_id}", headers=reviewer)
        return found.json() if found.status_code == 200 else None

    task = await eventually(listed, 30, "the candidate's review task")
    assert task["model_version"] == CANDIDATE and task["predicted_label"] == "scratch"
    # The batch's classification opened the task (no child in the batch's history) and wrote its first
    # projection row: the task opened with no activity of its own, its batch findable on it.
    handle = api.client.get_workflow_handle(review_id)
    opened = [e.WhichOneof("attributes") for e in (await handle.fetch_history()).events]
    assert not any(kind and ("activity" in kind or kind.startswith("marker")) for kind in opened), opened
    batch_events = [e.WhichOneof("attributes") for e in (await api.client.get_workflow_handle(
        batch_id).fetch_history()).events]
    assert not any(kind and "child" in kind for kind in batch_events) and len(batch_events) == 12
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.BATCH) == batch_id and attributes.get(sa.SITE) == "canary-site"
    production_task = await eventually(
        lambda: _task(api, review_workflow_id(batch["frames"][4]["frame_id"], "low_confidence")), 30,
        "production's review task")
    assert production_task["model_version"] == production
    assert (await api.http.post(f"/v1/reviews/{review_id}/claim", headers=reviewer)).status_code == 200
    decided = await api.http.post(f"/v1/reviews/{review_id}/decision", json={"label": "ok"}, headers=reviewer)
    assert decided.status_code == 200, decided.text

    async def labelled() -> dict | None:
        async with api.pool.connection() as conn:
            cur = await conn.execute("SELECT model_version, is_correction FROM review_labels WHERE frame_id = %s",
                                     (frame_id,))
            return await cur.fetchone()

    recorded = await eventually(labelled, 30, "the reviewer's label")
    assert recorded == {"model_version": CANDIDATE, "is_correction": True}
    await record_history(handle, "review_task_opened_by_batch_decided")


async def _task(api, review_id: str) -> dict | None:
    found = await api.http.get(f"/v1/reviews/{review_id}", headers=api.auth("reviewer"))
    return found.json() if found.status_code == 200 else None
