"""A frame batch end to end through the API, against the real Temporal, Postgres and object store."""

from __future__ import annotations

import asyncio
import json

from temporalio.client import WorkflowExecutionStatus

from tests.frames import NOT_AN_IMAGE, jpeg_frame, multipart, truncated_jpeg


async def wait_for_batch(api, batch_id: str, timeout: float = 60) -> dict:
    handle = api.client.get_workflow_handle(batch_id)
    await asyncio.wait_for(handle.result(), timeout)
    response = await api.http.get(f"/v1/batches/{batch_id}")
    assert response.status_code == 200
    return response.json()


async def test_batch_with_a_corrupt_frame_completes_and_records_every_frame(api):
    files = [(f"f{i}.jpg", jpeg_frame(i), "image/jpeg") for i in range(5)]
    files.insert(2, ("broken.jpg", truncated_jpeg(), "image/jpeg"))
    files.append(("notes.csv", NOT_AN_IMAGE, "application/octet-stream"))
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "cam-a", "site_id": "site-1", "idempotency_key": "k1"}, files=multipart(files)
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["batch_id"] == "batch-cam-a-k1" and accepted["created"] is True
    assert accepted["temporal_ui_url"].endswith("/workflows/batch-cam-a-k1")

    batch = await wait_for_batch(api, accepted["batch_id"])
    assert batch["status"] == "completed"
    assert (batch["frame_count"], batch["accepted_count"], batch["rejected_count"]) == (7, 5, 2)
    by_name = {f["filename"]: f for f in batch["frames"]}
    assert by_name["broken.jpg"]["status"] == "rejected"
    assert "corrupt image" in by_name["broken.jpg"]["reject_reason"]
    assert by_name["notes.csv"]["reject_reason"].startswith("not an image")
    assert by_name["f0.jpg"]["status"] == "accepted" and by_name["f0.jpg"]["width"] == 96
    assert [f["position"] for f in batch["frames"]] == list(range(7))


async def test_resubmit_with_the_same_key_starts_one_workflow(api):
    form = {"camera_id": "cam-b", "idempotency_key": "same"}
    files = multipart([("a.jpg", jpeg_frame(1), "image/jpeg")])
    first = await api.http.post("/v1/batches", data=form, files=files)
    assert first.status_code == 202
    await wait_for_batch(api, first.json()["batch_id"])

    again = await api.http.post("/v1/batches", data=form, files=files)
    assert again.status_code == 200
    assert again.json()["created"] is False and again.json()["batch_id"] == first.json()["batch_id"]

    runs = [w async for w in api.client.list_workflows(f"WorkflowId = '{first.json()['batch_id']}'")]
    assert len(runs) == 1
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM frames WHERE batch_id = %s", (first.json()["batch_id"],))
        assert (await cur.fetchone())["n"] == 1


async def test_concurrent_resubmits_start_one_workflow(api):
    form = {"camera_id": "cam-c", "idempotency_key": "race"}
    files = multipart([("a.jpg", jpeg_frame(2), "image/jpeg")])
    responses = await asyncio.gather(*(api.http.post("/v1/batches", data=form, files=files) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202]
    await wait_for_batch(api, "batch-cam-c-race")
    runs = [w async for w in api.client.list_workflows("WorkflowId = 'batch-cam-c-race'")]
    assert len(runs) == 1


async def test_history_of_a_32_frame_batch_stays_small_and_holds_no_frame_bytes(api):
    frames = [jpeg_frame(i, size=256) for i in range(32)]
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "cam-d", "idempotency_key": "big"},
        files=multipart([(f"f{i}.jpg", f, "image/jpeg") for i, f in enumerate(frames)]),
    )
    batch_id = response.json()["batch_id"]
    batch = await wait_for_batch(api, batch_id)
    assert batch["accepted_count"] == 32
    history = await api.client.get_workflow_handle(batch_id).fetch_history()
    size = sum(event.ByteSize() for event in history.events)
    assert size < 64 * 1024, f"history is {size} bytes"
    print(f"history of a 32-frame batch: {size} bytes in {len(history.events)} events")
    # Frame bytes never cross Temporal: no JPEG start-of-image marker or base64 of one in the history.
    text = json.dumps(history.to_json_dict())
    assert "/9j/" not in text  # base64 of FF D8 FF
    assert sum(len(f) for f in frames) > 5 * size  # the frames themselves would not fit


async def test_workflow_is_findable_by_camera_and_status(api):
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "cam-e", "site_id": "site-e", "idempotency_key": "find"},
        files=multipart([("a.jpg", jpeg_frame(3), "image/jpeg")]),
    )
    batch_id = response.json()["batch_id"]
    await wait_for_batch(api, batch_id)

    async def find():
        query = "SightlineCamera = 'cam-e' AND SightlineSite = 'site-e' AND SightlineStatus = 'completed'"
        return [w.id async for w in api.client.list_workflows(query)]

    for _ in range(100):  # visibility is eventually consistent
        if await find() == [batch_id]:
            break
        await asyncio.sleep(0.05)
    assert await find() == [batch_id]
    description = await api.client.get_workflow_handle(batch_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED


async def test_unknown_batch_is_404(api):
    response = await api.http.get("/v1/batches/batch-nope-nope")
    assert response.status_code == 404
    assert "no batch" in response.json()["detail"]


async def test_bad_camera_id_is_422_with_a_reason(api):
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "../etc", "idempotency_key": "x"},
        files=multipart([("a.jpg", jpeg_frame(0), "image/jpeg")]),
    )
    assert response.status_code == 422
    assert "camera_id" in response.json()["detail"]
