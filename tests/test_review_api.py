"""The review API on the real app, Temporal worker and Postgres: roles, the queue's order and filters,
claim / decision / release with audit rows, concurrent "next task" without double hand-out, metrics."""

from __future__ import annotations

import asyncio
import uuid

from infra.store import put_frame
from infra.tables.api_keys import create_key
from tests.frames import jpeg_frame
from tests.polling import eventually
from tests.review_support import fetch_all, fetch_one, insert_batch, review_input
from vision.camera import CLASSES
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import ReviewTaskInput, review_workflow_id


async def open_task(api, input: ReviewTaskInput) -> str:
    review_id = review_workflow_id(input.frame_id, input.reason)
    await api.client.start_workflow(ReviewTaskWorkflow.run, input, id=review_id,
                                    task_queue=api.settings.orchestration_task_queue)

    async def listed():
        return await fetch_one(api.pool, "SELECT 1 AS ok FROM review_tasks WHERE review_id = %s", review_id)

    await eventually(listed, message=f"{review_id} in the queue")
    return review_id


async def reviewer_key(api, name: str) -> dict[str, str]:
    async with api.pool.connection() as conn:
        key = await create_key(conn, name, "reviewer")
    return {"Authorization": f"Bearer {key.raw_key}"}


async def test_roles(api):
    batch = f"batch-roles-{uuid.uuid4().hex[:6]}"
    review_id = await open_task(api, review_input(batch))
    assert (await api.http.get("/v1/reviews")).status_code == 403  # the client's default key is ingest
    assert (await api.http.post(f"/v1/reviews/{review_id}/claim")).status_code == 403
    assert (await api.http.get("/v1/reviews", headers=api.auth("ops"))).status_code == 403
    assert (await api.http.get("/v1/reviews", headers={"Authorization": ""})).status_code == 401
    for role in ("reviewer", "ml-engineer", "admin"):
        response = await api.http.get("/v1/reviews", params={"batch_id": batch}, headers=api.auth(role))
        assert response.status_code == 200, (role, response.text)
        assert [t["review_id"] for t in response.json()["tasks"]] == [review_id]
    assert (await api.http.get("/v1/reviews/metrics")).status_code == 403


async def test_queue_order_and_filters(api):
    batch = f"batch-order-{uuid.uuid4().hex[:6]}"
    old = await open_task(api, review_input(batch, 0))
    urgent = await open_task(api, review_input(batch, 1, priority="high"))
    new = await open_task(api, review_input(batch, 2, reason="qa_sample", camera_id="cam2"))
    headers = api.auth("reviewer")
    listed = (await api.http.get("/v1/reviews", params={"batch_id": batch}, headers=headers)).json()
    assert [t["review_id"] for t in listed["tasks"]] == [urgent, old, new]
    first = listed["tasks"][0]
    assert first["priority"] == 2 and first["status"] == "pending" and first["classes"] == list(CLASSES)
    assert first["temporal_ui_url"].endswith(f"/workflows/{urgent}") and first["sla_due_at"]

    by_camera = (await api.http.get("/v1/reviews", params={"batch_id": batch, "camera_id": "cam2"},
                                    headers=headers)).json()
    assert [t["review_id"] for t in by_camera["tasks"]] == [new]
    by_reason = (await api.http.get("/v1/reviews", params={"batch_id": batch, "reason": "qa_sample"},
                                    headers=headers)).json()
    assert [t["review_id"] for t in by_reason["tasks"]] == [new]

    # A claimed task goes behind the pending ones.
    assert (await api.http.post(f"/v1/reviews/{urgent}/claim", headers=headers)).status_code == 200

    async def reordered():
        tasks = (await api.http.get("/v1/reviews", params={"batch_id": batch}, headers=headers)).json()["tasks"]
        return tasks if tasks[-1]["review_id"] == urgent else None

    tasks = await eventually(reordered, message="claimed task listed last")
    assert tasks[-1]["status"] == "claimed" and tasks[-1]["claimed_by_name"] == "test reviewer"
    assert (await api.http.get("/v1/reviews", params={"status": "bogus"}, headers=headers)).status_code == 422


async def test_claim_decide_release_through_the_api(api):
    batch = f"batch-api-{uuid.uuid4().hex[:6]}"
    await insert_batch(api.pool, batch)
    key = await asyncio.to_thread(put_frame, api.store, jpeg_frame(3), "image/jpeg")
    review_id = await open_task(api, review_input(batch, object_key=key))
    alice, bob = api.auth("reviewer"), await reviewer_key(api, "bob")

    frame = await api.http.get(f"/v1/reviews/{review_id}/frame", headers=alice)
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert frame.content == jpeg_frame(3)

    claimed = await api.http.post(f"/v1/reviews/{review_id}/claim", headers=alice)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["status"] == "claimed" and claimed.json()["task"]["frame_id"] == f"{batch}:0000"

    refused = await api.http.post(f"/v1/reviews/{review_id}/claim", headers=bob)
    assert refused.status_code == 409 and refused.json()["detail"]["error"] == "ClaimHeld"
    not_holder = await api.http.post(f"/v1/reviews/{review_id}/decision", json={"label": "ok"}, headers=bob)
    assert not_holder.status_code == 409 and not_holder.json()["detail"]["error"] == "NotClaimHolder"
    bad = await api.http.post(f"/v1/reviews/{review_id}/decision", json={"label": "cat"}, headers=alice)
    assert bad.status_code == 422 and bad.json()["detail"]["error"] == "InvalidLabel"

    released = await api.http.post(f"/v1/reviews/{review_id}/release", headers=alice)
    assert released.status_code == 200 and released.json()["status"] == "pending"
    assert (await api.http.post(f"/v1/reviews/{review_id}/claim", headers=bob)).status_code == 200
    decided = await api.http.post(f"/v1/reviews/{review_id}/decision", json={"label": "ok", "note": "glare"},
                                  headers=bob)
    assert decided.status_code == 200 and decided.json()["status"] == "decided"
    assert decided.json()["final_label"] == "ok"

    await asyncio.wait_for(api.client.get_workflow_handle(review_id).result(), 30)
    label = await fetch_one(api.pool, "SELECT * FROM review_labels WHERE review_id = %s", review_id)
    assert label is not None
    assert (label["label"], label["reviewer_name"], label["is_correction"], label["note"]) == (
        "ok", "bob", True, "glare")
    again = await api.http.post(f"/v1/reviews/{review_id}/claim", headers=alice)
    assert again.status_code == 409 and again.json()["detail"]["error"] == "AlreadyDecided"
    assert (await api.http.post("/v1/reviews/review-nope-qa_sample/claim", headers=alice)).status_code == 404

    audit = await fetch_all(api.pool, "SELECT key_name, action, details FROM audit_log WHERE workflow_id = %s"
                            " ORDER BY audit_id", review_id)
    actions = [(a["key_name"], a["action"], a["details"]["outcome"]) for a in audit]
    assert actions[:6] == [("test reviewer", "review.claim", "claimed"), ("bob", "review.claim", "refused"),
                           ("bob", "review.decision", "refused"), ("test reviewer", "review.decision", "refused"),
                           ("test reviewer", "review.release", "pending"), ("bob", "review.claim", "claimed")]
    assert actions[6] == ("bob", "review.decision", "decided")

    metrics = (await api.http.get("/v1/reviews/metrics", headers=alice)).json()
    assert metrics["decided"] >= 1 and metrics["latency_p50_seconds"] is not None
    assert 0 < metrics["correction_rate"] <= 1
    prometheus = (await api.http.get("/metrics")).text
    assert "sightline_review_tasks_pending" in prometheus and "sightline_review_latency_seconds_count" in prometheus


async def test_concurrent_next_never_hands_out_a_task_twice(api):
    batch = f"batch-next-{uuid.uuid4().hex[:6]}"
    for i in range(6):
        await open_task(api, review_input(batch, i))
    reviewers = [await reviewer_key(api, f"r{i}") for i in range(3)]

    async def take(headers):
        response = await api.http.post("/v1/reviews/next", params={"batch_id": batch}, headers=headers)
        assert response.status_code == 200, response.text
        return headers["Authorization"].split("_")[1], response.json()["review_id"]

    # Three reviewers, two requests each, all at once: six distinct tasks, each held by who got it.
    got = await asyncio.gather(*(take(h) for h in reviewers for _ in range(2)))
    handed = [review_id for _, review_id in got]
    assert len(set(handed)) == len(handed) == 6, got
    for key_id, review_id in got:
        state = await api.client.get_workflow_handle(review_id).query(ReviewTaskWorkflow.state)
        assert state.status == "claimed" and state.claimed_by == key_id
