"""A frame batch end to end through the API, against the real Temporal, Postgres and object store."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.frames import NOT_AN_IMAGE, jpeg_frame, multipart, noise_png, truncated_jpeg


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
    frames = [noise_png(i, size=128) for i in range(32)]
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "cam-d", "idempotency_key": "big"},
        files=multipart([(f"f{i}.png", f, "image/png") for i, f in enumerate(frames)]),
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
    assert "iVBORw0KGgo" not in text  # base64 of the PNG signature
    assert sum(len(f) for f in frames) > 30 * size  # 1.5 MB of frames, a few tens of KB of history


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


# -- limits: each breaks with its own status and a reason naming the frame -------------------------

@pytest.mark.settings(max_frames_per_batch=3)
async def test_too_many_frames_is_413(api):
    files = multipart([(f"f{i}.jpg", jpeg_frame(i), "image/jpeg") for i in range(4)])
    response = await api.http.post("/v1/batches", data={"camera_id": "lim"}, files=files)
    assert response.status_code == 413 and "4 frames exceed the limit of 3" in response.json()["detail"]


@pytest.mark.settings(max_frame_bytes=2000)
async def test_frame_too_large_is_413_naming_the_frame(api):
    files = multipart([("small.jpg", jpeg_frame(0, 16), "image/jpeg"),
                       ("huge.png", b"\x89PNG" + b"0" * 5000, "image/png")])
    response = await api.http.post("/v1/batches", data={"camera_id": "lim"}, files=files)
    assert response.status_code == 413
    assert "frame 1 (huge.png)" in response.json()["detail"]


async def test_unaccepted_type_is_415_naming_the_frame(api):
    files = multipart([("a.jpg", jpeg_frame(0), "image/jpeg"), ("anim.gif", b"GIF89a...", "image/gif")])
    response = await api.http.post("/v1/batches", data={"camera_id": "lim"}, files=files)
    assert response.status_code == 415
    assert "frame 1 (anim.gif): type image/gif" in response.json()["detail"]


async def test_missing_fields_are_422(api):
    no_camera = await api.http.post("/v1/batches", files=multipart([("a.jpg", jpeg_frame(0), "image/jpeg")]))
    assert no_camera.status_code == 422 and "camera_id" in no_camera.json()["detail"]
    no_frames = await api.http.post("/v1/batches", data={"camera_id": "lim"}, files={"other": ("x", b"x")})
    assert no_frames.status_code == 422 and "at least one frame" in no_frames.json()["detail"]
    wrong_type = await api.http.post("/v1/batches", content=b"frames", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415


async def test_json_batch_names_stored_objects(api):
    api.store.put("uploads/line-9/a.jpg", jpeg_frame(5))
    api.store.put("uploads/line-9/b.jpg", truncated_jpeg(6))
    body = {"camera_id": "line-9", "idempotency_key": "json-1",
            "frames": [{"object_key": "uploads/line-9/a.jpg"}, {"object_key": "uploads/line-9/b.jpg"}]}
    response = await api.http.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = await wait_for_batch(api, response.json()["batch_id"])
    assert (batch["accepted_count"], batch["rejected_count"]) == (1, 1)
    assert batch["frames"][0]["filename"] == "a.jpg"
    assert (await api.http.post("/v1/batches", json=body)).status_code == 200

    missing = await api.http.post("/v1/batches", json={**body, "idempotency_key": "json-2",
                                                         "frames": [{"object_key": "uploads/none.jpg"}]})
    assert missing.status_code == 422 and "frame 0: no object 'uploads/none.jpg'" in missing.json()["detail"]
    unsafe = await api.http.post("/v1/batches", json={**body, "frames": [{"object_key": "../etc/passwd"}]})
    assert unsafe.status_code == 422 and "frame 0" in unsafe.json()["detail"]


# -- reading: list with filters and pages, predictions, one frame ---------------------------------

async def test_list_filters_and_pages(api):
    for i in range(5):
        camera = "list-a" if i < 3 else "list-b"
        response = await api.http.post("/v1/batches", data={"camera_id": camera, "site_id": "list-site",
                                                             "idempotency_key": f"l{i}"},
                                       files=multipart([("a.jpg", jpeg_frame(100 + i), "image/jpeg")]))
        await wait_for_batch(api, response.json()["batch_id"])
    page = (await api.http.get("/v1/batches", params={"camera_id": "list-a", "limit": 2})).json()
    assert [b["batch_id"] for b in page["items"]] == ["batch-list-a-l2", "batch-list-a-l1"]
    rest = (await api.http.get("/v1/batches", params={"camera_id": "list-a", "limit": 2,
                                                      "cursor": page["next_cursor"]})).json()
    assert [b["batch_id"] for b in rest["items"]] == ["batch-list-a-l0"] and rest["next_cursor"] is None
    by_site = (await api.http.get("/v1/batches", params={"site_id": "list-site", "status": "completed"})).json()
    assert len(by_site["items"]) == 5
    failed = await api.http.get("/v1/batches", params={"status": "failed", "site_id": "list-site"})
    assert failed.json()["items"] == []
    bad = await api.http.get("/v1/batches", params={"cursor": "not-a-cursor!"})
    assert bad.status_code == 422


async def test_predictions_and_frame_detail_with_a_time_limited_image_url(api):
    frames = [(f"f{i}.jpg", jpeg_frame(200 + i), "image/jpeg") for i in range(3)]
    response = await api.http.post("/v1/batches", data={"camera_id": "pred", "idempotency_key": "p1"},
                                   files=multipart(frames))
    batch = await wait_for_batch(api, response.json()["batch_id"])
    assert batch["label_counts"] == {"ok": 3} and batch["model_version"] == "v-test"
    assert batch["duration_s"] is not None and batch["started_at"] is not None

    first = (await api.http.get(f"/v1/batches/{batch['batch_id']}/predictions", params={"limit": 2})).json()
    assert [f["position"] for f in first["items"]] == [0, 1]
    assert first["items"][0]["prediction"]["label"] == "ok"
    second = (await api.http.get(f"/v1/batches/{batch['batch_id']}/predictions",
                                 params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [f["position"] for f in second["items"]] == [2] and second["next_cursor"] is None

    frame_id = first["items"][1]["frame_id"]
    detail = (await api.http.get(f"/v1/frames/{frame_id}", headers=api.auth("reviewer"))).json()
    assert detail["predictions"][0]["model_version"] == "v-test"
    image = await api.http.get(detail["image_url"], headers={"Authorization": ""})
    assert image.status_code == 200 and image.content == frames[1][1]
    assert image.headers["content-type"] == "image/jpeg"
    tampered = detail["image_url"].replace("expires=", "expires=1")
    assert (await api.http.get(tampered)).status_code == 403


async def test_every_mutating_call_is_audited(api):
    response = await api.http.post("/v1/batches", data={"camera_id": "audit", "idempotency_key": "a1"},
                                   files=multipart([("a.jpg", jpeg_frame(7), "image/jpeg")]))
    batch_id = response.json()["batch_id"]
    await api.http.post("/v1/batches", data={"camera_id": "audit", "idempotency_key": "a1"},
                        files=multipart([("a.jpg", jpeg_frame(7), "image/jpeg")]))
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM audit_log WHERE workflow_id = %s ORDER BY audit_id", (batch_id,))
        rows = await cur.fetchall()
    assert [r["details"]["created"] for r in rows] == [True, False]  # the resubmit is recorded, as a no-op
    assert {r["action"] for r in rows} == {"batch.create"} and {r["role"] for r in rows} == {"ingest"}
    assert rows[0]["resource"] == f"batches/{batch_id}" and rows[0]["details"]["frames"] == 1
    assert rows[0]["key_name"] == "test ingest"
    assert rows[0]["request_id"] and rows[0]["request_id"] != rows[1]["request_id"]
