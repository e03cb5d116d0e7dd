"""Routing after classification, end to end through the API: low confidence and QA samples go to
human review (one ReviewTaskWorkflow per frame), confident defects raise a signed webhook alert that
is retried after a failure, and a dead endpoint never holds up the batch."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from infra.outbound_addresses import AddressPolicy
from infra.postgres_server import free_port
from infra.tables.webhook_subscriptions import get_subscription_by_url, register_webhook
from infra.webhook_signatures import verify
from tests.frames import jpeg_frame, multipart
from tests.polling import eventually
from tests.webhook_receiver import Receiver
from workflows.review_types import review_workflow_id


async def submit(api, camera: str, key: str, count: int, webhook_url: str | None = None, seed: int = 0):
    frames = [(f"f{i}.jpg", jpeg_frame(seed + i), "image/jpeg") for i in range(count)]
    data = {"camera_id": camera, "site_id": "route-site", "idempotency_key": key}
    if webhook_url:
        data["webhook_url"] = webhook_url
    response = await api.http.post("/v1/batches", data=data, files=multipart(frames))
    assert response.status_code == 202, response.text
    return response.json()["batch_id"], frames


async def register(api, url: str, site_id: str = "route-site") -> None:
    """A batch may name only a webhook registered for its site."""
    async with api.pool.connection() as conn:
        await register_webhook(conn, url, site_id, AddressPolicy.allowing(api.settings.webhook_allowed_networks))


async def keys_of(api, batch_id: str) -> list[str]:
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT object_key FROM frames WHERE batch_id = %s ORDER BY position", (batch_id,))
        return [r["object_key"] for r in await cur.fetchall()]


async def test_low_confidence_goes_to_review_and_a_confident_defect_alerts(api):
    # Frames are content-addressed, so the scripted answers can be set before the batch runs.
    from infra.store import frame_key, sha256_hex

    frames = [jpeg_frame(300 + i) for i in range(4)]
    api.classifier.script(frame_key(sha256_hex(frames[0])), "scratch", 0.55)  # uncertain -> review
    api.classifier.script(frame_key(sha256_hex(frames[1])), "dent", 0.97)  # confident defect -> alert
    with Receiver([500]) as receiver:
        await register(api, receiver.url)
        response = await api.http.post(
            "/v1/batches",
            data={"camera_id": "route", "site_id": "route-site", "idempotency_key": "r1", "webhook_url": receiver.url},
            files=multipart([(f"f{i}.jpg", f, "image/jpeg") for i, f in enumerate(frames)]),
        )
        batch_id = response.json()["batch_id"]
        result = await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
        assert (result["sent_to_review"], result["defects"]) == (1, 1)

        batch = (await api.http.get(f"/v1/batches/{batch_id}")).json()
        assert batch["sent_to_review"] == 1 and batch["defect_count"] == 1
        assert batch["label_counts"] == {"ok": 2, "scratch": 1, "dent": 1}
        routes = {f["position"]: f["routes"] for f in batch["frames"]}
        assert routes == {0: ["review:low_confidence"], 1: ["alert:defect"], 2: [], 3: []}

        review = api.client.get_workflow_handle(review_workflow_id(f"{batch_id}:0000", "low_confidence"))
        assert (await review.describe()).id == review.id  # started, and it outlives the finished batch

        # The alert: first attempt answered 500, Temporal retried; both signed with the subscription secret.
        async def retried() -> bool:
            return len(receiver.requests) >= 2

        await eventually(retried, 30, "the retried webhook")
        async with api.pool.connection() as conn:
            subscription = await get_subscription_by_url(conn, receiver.url)
        assert subscription is not None
        secret = subscription.secret
        (h1, _), (h2, b2) = receiver.requests[:2]
        assert h1["x-sightline-delivery"] == h2["x-sightline-delivery"] == f"{batch_id}.defects"
        assert verify(secret, b2, h2["x-sightline-signature"])
        assert not verify("another-secret", b2, h2["x-sightline-signature"])
        body = json.loads(b2)
        assert body["event"] == "batch.defects"
        assert body["data"]["defects"] == [{"frame_id": f"{batch_id}:0001", "label": "dent", "confidence": 0.97,
                                               "model_version": api.classifier.model_version}]


@pytest.mark.settings(qa_sample_rate=1.0)
async def test_qa_sample_sends_confident_frames_to_review(api):
    batch_id, _ = await submit(api, "qa", "q1", 3, seed=400)
    result = await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
    assert result["sent_to_review"] == 3
    batch = (await api.http.get(f"/v1/batches/{batch_id}")).json()
    assert all(f["routes"] == ["review:qa_sample"] for f in batch["frames"])
    for position in range(3):
        handle = api.client.get_workflow_handle(review_workflow_id(f"{batch_id}:{position:04d}", "qa_sample"))
        await handle.describe()


async def test_a_dead_webhook_endpoint_does_not_block_the_batch(api):
    from infra.store import frame_key, sha256_hex

    frame = jpeg_frame(500)
    api.classifier.script(frame_key(sha256_hex(frame)), "stain", 0.99)
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    await register(api, dead, "dead-site")
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "dead", "site_id": "dead-site", "idempotency_key": "d1",
                             "webhook_url": dead},
        files=multipart([("a.jpg", frame, "image/jpeg")]),
    )
    batch_id = response.json()["batch_id"]
    result = await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
    assert result["defects"] == 1
    delivery = api.client.get_workflow_handle(f"webhook-{batch_id}.defects")
    assert (await delivery.describe()).status == WorkflowExecutionStatus.RUNNING  # still retrying, on its own


async def test_batch_is_found_by_camera_with_the_temporal_cli(api):
    batch_id, _ = await submit(api, "cli-cam", "c1", 1, seed=600)
    await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
    temporal = str(Path(sys.executable).parent / "temporal")

    def listed(query: str) -> list[str]:
        out = subprocess.run(
            [temporal, "workflow", "list", "--address", api.settings.temporal_address, "--query", query,
             "--output", "json"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return [w["execution"]["workflowId"] for w in json.loads(out or "[]")]

    for query in ("SightlineCamera = 'cli-cam'",
                  "SightlineSite = 'route-site' AND SightlineCamera = 'cli-cam'",
                  "SightlineCamera = 'cli-cam' AND SightlineStatus = 'completed' AND SightlineModelVersion = 'v-test'",
                  "SightlineCamera = 'cli-cam' AND SightlineDefectCount = 0"):
        found = await eventually(functools.partial(asyncio.to_thread, listed, query), 15, query)
        assert found == [batch_id], query


async def test_an_unfamiliar_frame_goes_to_review_and_never_alerts(api):
    """A frame of something the model was never trained on may come with a confident defect label:
    its novelty sends it to review (reason `unfamiliar`), no alert is raised, and the batch and its
    camera count it."""
    from infra.store import frame_key, sha256_hex

    frames = [jpeg_frame(500 + i) for i in range(3)]
    api.classifier.script(frame_key(sha256_hex(frames[0])), "dent", 0.99, unfamiliar=True)
    api.classifier.script(frame_key(sha256_hex(frames[1])), "dent", 0.99)  # familiar: a real defect
    with Receiver([]) as receiver:
        await register(api, receiver.url)
        response = await api.http.post(
            "/v1/batches",
            data={"camera_id": "odd-cam", "site_id": "route-site", "idempotency_key": "u1",
                  "webhook_url": receiver.url},
            files=multipart([(f"f{i}.jpg", f, "image/jpeg") for i, f in enumerate(frames)]),
        )
        batch_id = response.json()["batch_id"]
        result = await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
        assert (result["unfamiliar"], result["sent_to_review"], result["defects"]) == (1, 1, 1)
        async def alerted() -> list[tuple[dict[str, str], bytes]]:
            return receiver.requests[:1]

        alert = await eventually(alerted, 30, "the defect alert")
        body = json.loads(alert[0][1])
        assert [d["frame_id"] for d in body["data"]["defects"]] == [f"{batch_id}:0001"]

    batch = (await api.http.get(f"/v1/batches/{batch_id}")).json()
    assert batch["unfamiliar_count"] == 1
    routes = {f["position"]: f["routes"] for f in batch["frames"]}
    assert routes == {0: ["review:unfamiliar"], 1: ["alert:defect"], 2: []}
    assert batch["frames"][0]["prediction"]["unfamiliar"] is True
    review = api.client.get_workflow_handle(review_workflow_id(f"{batch_id}:0000", "unfamiliar"))
    assert (await review.describe()).id == review.id

    cameras = (await api.http.get("/v1/cameras", params={"site_id": "route-site"})).json()["cameras"]
    odd = next(c for c in cameras if c["camera_id"] == "odd-cam")
    assert (odd["frames"], odd["unfamiliar"], odd["defects"]) == (3, 1, 1)


async def test_a_batch_may_name_only_a_webhook_registered_for_its_site(api):
    with Receiver([]) as receiver:
        files = multipart([("a.jpg", jpeg_frame(520), "image/jpeg")])
        data = {"camera_id": "reg", "site_id": "route-site", "idempotency_key": "w1", "webhook_url": receiver.url}
        unregistered = await api.http.post("/v1/batches", data=data, files=files)
        assert unregistered.status_code == 422 and "not registered for site" in unregistered.json()["detail"]
        await register(api, receiver.url, "another-site")
        elsewhere = await api.http.post("/v1/batches", data=data, files=files)
        assert elsewhere.status_code == 422
        form = {"site_id": "route-site", "webhook_url": receiver.url}
        camera = await api.http.post("/v1/cameras/reg/frames", data=form,
                                     files={"frame": ("a.jpg", jpeg_frame(521), "image/jpeg")})
        assert camera.status_code == 422
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM batches WHERE camera_id = 'reg'")
        assert (await cur.fetchone())["n"] == 0, "nothing was recorded for the refused requests"
