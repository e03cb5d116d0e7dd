"""The review API on the real app, Temporal worker and Postgres: roles, the queue's order and filters,
claim / decision / release with audit rows, concurrent "next task" without double hand-out, metrics."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from infra.store import put_frame
from infra.tables import review_tasks
from infra.tables.api_keys import create_key
from tests.frames import jpeg_frame
from tests.polling import eventually
from tests.review_support import fetch_all, fetch_one, insert_batch, review_input
from vision.camera import CLASSES
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import ReviewTaskInput, ReviewTaskView, review_workflow_id


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
    assert frame.content == jpeg_frame(3) and frame.headers["x-content-type-options"] == "nosniff"

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
    assert (await api.http.get("/metrics")).status_code == 403, "metrics need an ops key"
    assert (await api.http.get("/metrics", headers={"Authorization": ""})).status_code == 401
    prometheus = (await api.http.get("/metrics", headers=api.auth("ops"))).text
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


async def scoped_key(api, name: str, **scope) -> dict[str, str]:
    async with api.pool.connection() as conn:
        key = await create_key(conn, name, "reviewer", **scope)
    return {"Authorization": f"Bearer {key.raw_key}"}


async def test_a_scoped_key_sees_and_acts_on_its_sites_and_cameras_only(api):
    batch = f"batch-scope-{uuid.uuid4().hex[:6]}"
    key = await asyncio.to_thread(put_frame, api.store, jpeg_frame(5), "image/jpeg")
    at_a = await open_task(api, review_input(batch, 0, site_id="plant-a", object_key=key))
    at_b = await open_task(api, review_input(batch, 1, site_id="plant-b", object_key=key))
    at_b_cam2 = await open_task(api, review_input(batch, 2, site_id="plant-b", camera_id="cam2", object_key=key))
    site_b = await scoped_key(api, "site-b reviewer", site_ids=["plant-b"])
    cam2 = await scoped_key(api, "cam2 reviewer", camera_ids=["cam2"])

    listed = (await api.http.get("/v1/reviews", params={"batch_id": batch}, headers=site_b)).json()
    assert {t["review_id"] for t in listed["tasks"]} == {at_b, at_b_cam2}
    listed = (await api.http.get("/v1/reviews", params={"batch_id": batch, "site_id": "plant-a"},
                                 headers=site_b)).json()
    assert listed["tasks"] == [], "asking for another site's tasks lists none"
    listed = (await api.http.get("/v1/reviews", params={"batch_id": batch}, headers=cam2)).json()
    assert [t["review_id"] for t in listed["tasks"]] == [at_b_cam2]

    # Another site's task is not found: a key of one site learns nothing of another's, not even that it exists.
    for method, path in (("GET", f"/v1/reviews/{at_a}"), ("GET", f"/v1/reviews/{at_a}/frame"),
                         ("POST", f"/v1/reviews/{at_a}/claim"), ("POST", f"/v1/reviews/{at_a}/release")):
        refused = await api.http.request(method, path, headers=site_b)
        assert refused.status_code == 404, (method, path, refused.text)
        assert "plant-a" not in refused.text
    refused = await api.http.post(f"/v1/reviews/{at_a}/decision", json={"label": "ok"}, headers=site_b)
    assert refused.status_code == 404 and refused.json()["detail"]["error"] == "NotFound"
    assert (await api.http.get(f"/v1/reviews/{at_b}/frame", headers=site_b)).status_code == 200
    assert (await api.http.get("/v1/reviews/metrics", headers=site_b)).status_code == 403

    # "next" offers only tasks in scope, whatever else is more urgent.
    taken = await api.http.post("/v1/reviews/next", params={"batch_id": batch}, headers=cam2)
    assert taken.status_code == 200 and taken.json()["review_id"] == at_b_cam2
    assert (await api.http.post("/v1/reviews/next", params={"batch_id": batch}, headers=cam2)).status_code == 204
    taken = await api.http.post("/v1/reviews/next", params={"batch_id": batch, "site_id": "plant-a"},
                                headers=site_b)
    assert taken.status_code == 204
    audit = await fetch_all(api.pool, "SELECT details FROM audit_log WHERE workflow_id = %s"
                            " AND action = 'review.claim'", at_a)
    assert [a["details"]["refusal"] for a in audit] == ["NotFound"], "refusals are on the record"


@pytest.mark.settings(review_max_lease_seconds=600, review_claim_lease_seconds=300, review_max_claims_per_reviewer=2)
async def test_leases_are_capped_and_a_reviewer_holds_few_claims(api):
    batch = f"batch-cap-{uuid.uuid4().hex[:6]}"
    tasks = [await open_task(api, review_input(batch, i)) for i in range(3)]
    me = await reviewer_key(api, "capped")

    too_long = await api.http.post(f"/v1/reviews/{tasks[0]}/claim", json={"lease_seconds": 601}, headers=me)
    assert too_long.status_code == 422 and too_long.json()["detail"]["error"] == "LeaseTooLong"
    for review_id in tasks[:2]:
        claimed = await api.http.post(f"/v1/reviews/{review_id}/claim", json={"lease_seconds": 600}, headers=me)
        assert claimed.status_code == 200, claimed.text

    async def both_listed():
        rows = await fetch_all(api.pool, "SELECT 1 FROM review_tasks WHERE batch_id = %s AND status = 'claimed'",
                               batch)
        return len(rows) == 2

    await eventually(both_listed, message="two claims listed")
    third = await api.http.post(f"/v1/reviews/{tasks[2]}/claim", headers=me)
    assert third.status_code == 409 and third.json()["detail"]["error"] == "ClaimLimitReached"
    nxt = await api.http.post("/v1/reviews/next", params={"batch_id": batch}, headers=me)
    assert nxt.status_code == 409 and nxt.json()["detail"]["error"] == "ClaimLimitReached"
    renewed = await api.http.post(f"/v1/reviews/{tasks[0]}/claim", headers=me)
    assert renewed.status_code == 200, "renewing a claim one holds is not a new claim"
    assert (await api.http.post(f"/v1/reviews/{tasks[1]}/release", headers=me)).status_code == 200

    async def one_listed():
        rows = await fetch_all(api.pool, "SELECT 1 FROM review_tasks WHERE batch_id = %s AND status = 'claimed'",
                               batch)
        return len(rows) == 1

    await eventually(one_listed, message="the release listed")
    assert (await api.http.post(f"/v1/reviews/{tasks[2]}/claim", headers=me)).status_code == 200


@pytest.mark.settings(review_next_timeout_s=2.0)
async def test_next_answers_within_its_time_bound_when_tasks_hang(api):
    """Tasks whose workflows have no worker (a queue nobody polls) hang a claim until its RPC times out;
    "next" gives up on the whole search after review_next_timeout_s and says to retry."""
    batch = f"batch-hang-{uuid.uuid4().hex[:6]}"
    handles = []
    for position in range(4):
        input = review_input(batch, position)
        review_id = review_workflow_id(input.frame_id, input.reason)
        handles.append(await api.client.start_workflow(ReviewTaskWorkflow.run, input, id=review_id,
                                                       task_queue=f"nobody-polls-{uuid.uuid4().hex[:8]}"))
        view = ReviewTaskView(review_id, "pending", "review", 1, False, None, None, None, None,
                              "2026-01-01T00:00:00+00:00", 1, 0)
        async with api.pool.connection() as conn:  # the projection its workflow would have written
            await review_tasks.upsert_projection(conn, {
                **vars(input), "review_id": review_id, "version": 1, "run_id": handles[-1].result_run_id,
                **{f: getattr(view, f) for f in ("status", "stage", "priority", "escalated", "claimed_by",
                                                 "claimed_by_name", "claim_expires_at", "sla_due_at", "created_at",
                                                 "decided_at", "final_label")},
                "escalated_at": None, "decided_by": [], "corrected": None})
    try:
        started = time.monotonic()
        response = await api.http.post("/v1/reviews/next", params={"batch_id": batch}, headers=api.auth("reviewer"))
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and "try again" in response.text
        assert elapsed < 4.5, f"next took {elapsed:.1f}s"
    finally:
        for handle in handles:
            await handle.terminate("test over")
