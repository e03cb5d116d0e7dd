"""A frame batch end to end through the API, against the real Temporal, Postgres and object store."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import pytest
from temporalio.client import WorkflowExecutionStatus

from infra.store import frame_key, sha256_hex
from serving import schema as serving_schema
from tests.frames import NOT_AN_IMAGE, jpeg_frame, multipart, noise_png, truncated_jpeg
from tests.polling import eventually
from workflows.batch_types import MAX_FRAME_ID, MAX_KEY, MAX_NAME
from workflows.camera_stream_types import stream_batch_id


async def wait_for_batch(api, batch_id: str, timeout: float = 60) -> dict:
    """The batch once it has finished, completed or failed (its row says so when its workflow closes)."""

    async def finished() -> dict | None:
        response = await api.http.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        batch = response.json()
        return batch if batch["status"] in ("completed", "failed") else None

    return await eventually(finished, timeout, f"batch {batch_id} to finish")


async def test_batch_with_a_corrupt_frame_completes_and_records_every_frame(api):
    files = [(f"f{i}.jpg", jpeg_frame(i), "image/jpeg") for i in range(5)]
    files.insert(2, ("broken.jpg", truncated_jpeg(), "image/jpeg"))
    files.append(("notes.csv", NOT_AN_IMAGE, "application/octet-stream"))
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "cam-a", "site_id": "site-1", "idempotency_key": "k1"}, files=multipart(files)
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["batch_id"] == "batch:site-1:cam-a:k1" and accepted["created"] is True
    assert accepted["temporal_ui_url"].endswith("/workflows/batch:site-1:cam-a:k1")

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
    await wait_for_batch(api, "batch:default:cam-c:race")
    runs = [w async for w in api.client.list_workflows("WorkflowId = 'batch:default:cam-c:race'")]
    assert len(runs) == 1


async def test_the_largest_batch_costs_temporal_a_handful_of_events_and_no_frame_bytes(api):
    """Temporal's cost is per event: a batch with no reviews and no alerts takes at most 15, and its
    history stays small whatever its size, because frames travel as Postgres rows, never as payloads."""
    count = api.settings.max_frames_per_batch
    frames = [noise_png(i, size=96) for i in range(count)]
    response = await api.http.post(
        "/v1/batches", data={"camera_id": "cam-d", "idempotency_key": "big"},
        files=multipart([(f"f{i}.png", f, "image/png") for i, f in enumerate(frames)]),
    )
    batch_id = response.json()["batch_id"]
    batch = await wait_for_batch(api, batch_id)
    assert batch["accepted_count"] == count and batch["sent_to_review"] == 0
    history = await api.client.get_workflow_handle(batch_id).fetch_history()
    size = sum(event.ByteSize() for event in history.events)
    print(f"history of a {count}-frame batch: {size} bytes in {len(history.events)} events")
    assert len(history.events) <= 15, [e.event_type for e in history.events]
    assert size < 64 * 1024, f"history is {size} bytes"
    # Frame bytes never cross Temporal: no PNG signature, raw or in base64, anywhere in the history.
    text = json.dumps(history.to_json_dict())
    assert "iVBORw0KGgo" not in text
    assert sum(len(f) for f in frames) > 100 * size


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


async def test_json_batch_names_the_callers_own_uploads(api):
    first = await api.http.put("/v1/uploads/a.jpg", content=jpeg_frame(5), headers={"content-type": "image/jpeg"})
    second = await api.http.put("/v1/uploads/b.jpg", content=truncated_jpeg(6))
    assert first.status_code == second.status_code == 200, first.text
    key_a, key_b = first.json()["object_key"], second.json()["object_key"]
    prefix = key_a.rsplit("/", 1)[0] + "/"
    assert key_b.startswith(prefix) and prefix.startswith("uploads/")
    body = {"camera_id": "line-9", "idempotency_key": "json-1",
            "frames": [{"object_key": key_a}, {"object_key": key_b}]}
    response = await api.http.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = await wait_for_batch(api, response.json()["batch_id"])
    assert (batch["accepted_count"], batch["rejected_count"]) == (1, 1)
    assert batch["frames"][0]["filename"] == "a.jpg"
    assert (await api.http.post("/v1/batches", json=body)).status_code == 200

    # Uploads are write-once, and a batch names a copy at the content address of what it read: other
    # bytes under the name later change nothing a batch, a reviewer or a training snapshot holds.
    assert (await api.http.put("/v1/uploads/a.jpg", content=jpeg_frame(5))).status_code == 200, "a retried PUT"
    overwrite = await api.http.put("/v1/uploads/a.jpg", content=jpeg_frame(500))
    assert overwrite.status_code == 409 and "write-once" in overwrite.json()["detail"]
    assert batch["frames"][0]["object_key"] == frame_key(sha256_hex(jpeg_frame(5)))
    api.store.put(key_a, jpeg_frame(501))  # even bytes changed behind the API's back
    frame = (await api.http.get(f"/v1/frames/{batch['frames'][0]['frame_id']}")).json()
    assert (await api.http.get(frame["image_url"])).content == jpeg_frame(5)

    # Only objects under the caller's own prefix: not a model file, not another caller's upload.
    api.store.put("models/v1/weights.pt", b"not yours")
    other = await api.http.put("/v1/uploads/c.jpg", content=jpeg_frame(7), headers=api.auth("admin"))
    for key in ("models/v1/weights.pt", other.json()["object_key"], "../etc/passwd", f"{prefix}none.jpg"):
        refused = await api.http.post("/v1/batches", json={**body, "idempotency_key": "json-2",
                                                           "frames": [{"object_key": key}]})
        assert refused.status_code == 422 and "frame 0" in refused.json()["detail"], key

    # No URL to the bytes of a frame that was rejected.
    rejected = await api.http.get(f"/v1/frames/{batch['frames'][1]['frame_id']}")
    assert rejected.json()["status"] == "rejected" and rejected.json()["image_url"] is None
    accepted = await api.http.get(f"/v1/frames/{batch['frames'][0]['frame_id']}")
    assert accepted.json()["image_url"]

    not_an_image = await api.http.put("/v1/uploads/x.jpg", content=b"GIF89a...")
    assert not_an_image.status_code == 415
    bad_name = await api.http.put("/v1/uploads/.hidden", content=jpeg_frame(8))
    assert bad_name.status_code in (404, 422)


# -- reading: list with filters and pages, predictions, one frame ---------------------------------

async def test_list_filters_and_pages(api):
    for i in range(5):
        camera = "list-a" if i < 3 else "list-b"
        response = await api.http.post("/v1/batches", data={"camera_id": camera, "site_id": "list-site",
                                                             "idempotency_key": f"l{i}"},
                                       files=multipart([("a.jpg", jpeg_frame(100 + i), "image/jpeg")]))
        await wait_for_batch(api, response.json()["batch_id"])
    page = (await api.http.get("/v1/batches", params={"camera_id": "list-a", "limit": 2})).json()
    assert [b["batch_id"] for b in page["items"]] == ["batch:list-site:list-a:l2", "batch:list-site:list-a:l1"]
    rest = (await api.http.get("/v1/batches", params={"camera_id": "list-a", "limit": 2,
                                                      "cursor": page["next_cursor"]})).json()
    assert [b["batch_id"] for b in rest["items"]] == ["batch:list-site:list-a:l0"] and rest["next_cursor"] is None
    by_site = (await api.http.get("/v1/batches", params={"site_id": "list-site", "status": "completed"})).json()
    assert len(by_site["items"]) == 5
    failed = await api.http.get("/v1/batches", params={"status": "failed", "site_id": "list-site"})
    assert failed.json()["items"] == []
    # A cursor this API did not hand out is the caller's mistake (400), not a server error.
    for tampered in ("not-a-cursor!", "W1sic2V0IiwgIngiXV0=", "ñ", base64.urlsafe_b64encode(b'["x"]').decode()):
        bad = await api.http.get("/v1/batches", params={"cursor": tampered})
        assert bad.status_code == 400 and "cursor" in bad.json()["detail"], tampered
    bad_page = await api.http.get(f"/v1/batches/{page['items'][0]['batch_id']}/predictions", params={"cursor": "ñ"})
    assert bad_page.status_code == 400


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


async def test_batch_ids_are_unambiguous_and_streams_have_their_own_namespace(api):
    """`a-b` + `c` and `a` + `b-c` once named the same batch, and the second silently got the first's
    frames; a client could also pre-create a camera stream's batch id."""
    files = multipart([("a.jpg", jpeg_frame(40), "image/jpeg")])
    first = await api.http.post("/v1/batches", data={"camera_id": "amb-x", "idempotency_key": "y"}, files=files)
    other = multipart([("b.jpg", jpeg_frame(41), "image/jpeg")])
    second = await api.http.post("/v1/batches", data={"camera_id": "amb", "idempotency_key": "x-y"}, files=other)
    assert first.status_code == second.status_code == 202
    assert first.json()["batch_id"] != second.json()["batch_id"]
    assert second.json()["created"] is True
    # A stream's batch ids start with `stream:`; a submission's always with `batch:`.
    assert stream_batch_id("default", "amb", "20260101-abc", 0).startswith("stream:")
    assert first.json()["batch_id"].startswith("batch:")


async def test_the_same_key_with_other_frames_is_a_conflict(api):
    form = {"camera_id": "cam-f", "idempotency_key": "once"}
    first = await api.http.post("/v1/batches", data=form, files=multipart([("a.jpg", jpeg_frame(50), "image/jpeg")]))
    assert first.status_code == 202
    again = await api.http.post("/v1/batches", data=form, files=multipart([("b.jpg", jpeg_frame(51), "image/jpeg")]))
    assert again.status_code == 409 and "other frames" in again.json()["detail"]
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT object_key FROM frames WHERE batch_id = %s", (first.json()["batch_id"],))
        keys = [r["object_key"] for r in await cur.fetchall()]
    assert keys == [frame_key(sha256_hex(jpeg_frame(50)))], "the first request's frames stay the batch's"


async def test_the_longest_ids_the_api_accepts_fit_everywhere_they_go(api):
    """A site id, camera id and key at their limits pass the API and serving's schema alike; one
    character more is refused at the API, not 30 retries later in serving."""
    assert MAX_FRAME_ID <= serving_schema.MAX_FRAME_ID
    site, camera, key = "s" * MAX_NAME, "c" * MAX_NAME, "k" * MAX_KEY
    response = await api.http.post("/v1/batches", data={"site_id": site, "camera_id": camera, "idempotency_key": key},
                                   files=multipart([("a.jpg", jpeg_frame(60), "image/jpeg")]))
    assert response.status_code == 202, response.text
    batch = await wait_for_batch(api, response.json()["batch_id"])
    assert batch["status"] == "completed" and batch["accepted_count"] == 1
    frame_id = batch["frames"][0]["frame_id"]
    assert len(frame_id) == MAX_FRAME_ID and serving_schema.FrameKey(frame_id=frame_id, object_key="k")
    too_long = await api.http.post("/v1/batches", data={"camera_id": camera + "c", "idempotency_key": "k"},
                                   files=multipart([("a.jpg", jpeg_frame(60), "image/jpeg")]))
    assert too_long.status_code == 422 and "camera_id" in too_long.json()["detail"]


async def test_a_failed_batch_says_why_and_runs_again_when_resubmitted(api):
    """A batch whose classification can never succeed is recorded 'failed' with the reason (not left
    'running' forever); the same request again runs it again and it completes."""
    from serving.client import ServingError

    form = {"camera_id": "cam-g", "idempotency_key": "retry-me"}
    files = multipart([("a.jpg", jpeg_frame(70), "image/jpeg"), ("b.jpg", jpeg_frame(71), "image/jpeg")])
    api.classifier.refusal = ServingError("model_not_found: no model version 'v404'", retryable=False, status=404)
    first = await api.http.post("/v1/batches", data=form, files=files)
    batch_id = first.json()["batch_id"]
    failed = await wait_for_batch(api, batch_id)
    assert failed["status"] == "failed" and "model_not_found" in failed["failure_reason"]

    async def findable_as_failed() -> bool:  # visibility follows the history a moment later
        query = f"WorkflowId = '{batch_id}' AND SightlineStatus = 'failed'"
        return len([w async for w in api.client.list_workflows(query)]) == 1

    await eventually(findable_as_failed, 30, "the failed batch in the Temporal UI's search")

    api.classifier.refusal = None
    again = await api.http.post("/v1/batches", data=form, files=files)
    assert again.status_code == 202 and again.json()["rerun"] is True and again.json()["status"] == "received"
    done = await wait_for_batch(api, batch_id)
    assert done["status"] == "completed" and done["accepted_count"] == 2 and done["failure_reason"] is None
    # A completed batch is never run a third time: the same request is answered from the record.
    third = await api.http.post("/v1/batches", data=form, files=files)
    assert third.status_code == 200 and third.json()["status"] == "completed"


# -- bounds: checked before anything is read -------------------------------------------------------

class CountingBody:
    """A multipart request body (one endless file part) that counts how much of it the server pulled."""

    HEAD = (b'--b\r\nContent-Disposition: form-data; name="frames"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.pulled = chunk, chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.HEAD
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/cameras/cam-h/frames", "/v1/uploads/a.jpg"])
async def test_without_a_key_the_body_is_never_read(api, path):
    body = CountingBody(b"x" * 65536, 16)
    headers = {"authorization": "", "content-type": "multipart/form-data; boundary=b"}
    response = await api.http.request("PUT" if "uploads" in path else "POST", path, content=body, headers=headers)
    assert response.status_code == 401
    assert body.pulled <= 1, "the body was read before the key was checked"


@pytest.mark.settings(max_request_bytes=200_000)
async def test_a_body_over_the_limit_is_refused_quickly_and_leaves_nothing(api):
    frames = [(f"f{i}.png", noise_png(i, size=128), "image/png") for i in range(8)]  # ~400 KB
    response = await api.http.post("/v1/batches", data={"camera_id": "cam-i", "idempotency_key": "big"},
                                   files=multipart(frames))
    assert response.status_code == 413
    streamed = CountingBody(b"x" * 65536, 100)  # no Content-Length: counted as it streams
    response = await api.http.post("/v1/batches", content=streamed,
                                   headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and streamed.pulled < 10
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM batches WHERE camera_id = 'cam-i'")
        assert (await cur.fetchone())["n"] == 0
    assert not [k for k in api.store.list("frames/") if any(k.endswith(sha256_hex(f[1])) for f in frames)]


async def test_form_parts_and_names_are_bounded(api):
    many_fields = {f"field{i}": "x" for i in range(50)}
    response = await api.http.post("/v1/batches", data={"camera_id": "cam-j", **many_fields},
                                   files=multipart([("a.jpg", jpeg_frame(80), "image/jpeg")]))
    assert response.status_code == 400
    long_field = await api.http.post("/v1/batches", data={"camera_id": "cam-j", "webhook_url": "h" * 10_000},
                                     files=multipart([("a.jpg", jpeg_frame(80), "image/jpeg")]))
    assert long_field.status_code == 400
    long_name = await api.http.post("/v1/batches", data={"camera_id": "cam-j"},
                                    files=multipart([("n" * 300 + ".jpg", jpeg_frame(80), "image/jpeg")]))
    assert long_name.status_code == 422 and "255" in long_name.json()["detail"]
    too_many = {"camera_id": "cam-j", "frames": [{"object_key": f"uploads/x/{i}.jpg"} for i in range(1025)]}
    assert (await api.http.post("/v1/batches", json=too_many)).status_code == 422


async def test_a_key_scoped_to_one_site_sees_and_submits_nothing_of_another(api):
    from infra.tables.api_keys import create_key

    async with api.pool.connection() as conn:
        site_a = (await create_key(conn, "site A line", "ingest", site_ids=["site-a"])).raw_key
    a = {"Authorization": f"Bearer {site_a}"}
    files = multipart([("a.jpg", jpeg_frame(90), "image/jpeg")])
    mine = await api.http.post("/v1/batches", headers=a, files=files,
                               data={"camera_id": "cam-s", "site_id": "site-a", "idempotency_key": "s1"})
    assert mine.status_code == 202
    refused = await api.http.post("/v1/batches", headers=a, files=files,
                                  data={"camera_id": "cam-s", "site_id": "site-b", "idempotency_key": "s2"})
    assert refused.status_code == 403 and "site-a" in refused.json()["detail"]
    camera = await api.http.post("/v1/cameras/cam-s/frames", headers=a, data={"site_id": "site-b"},
                                 files={"frame": ("a.jpg", jpeg_frame(91), "image/jpeg")})
    assert camera.status_code == 403

    # Another site's batch, submitted with an unscoped key: invisible to the site A key.
    theirs = await api.http.post("/v1/batches", files=multipart([("b.jpg", jpeg_frame(92), "image/jpeg")]),
                                 data={"camera_id": "cam-s", "site_id": "site-b", "idempotency_key": "s3"})
    their_batch = await wait_for_batch(api, theirs.json()["batch_id"])
    await wait_for_batch(api, mine.json()["batch_id"])
    listed = (await api.http.get("/v1/batches", headers=a, params={"camera_id": "cam-s"})).json()["items"]
    assert [b["site_id"] for b in listed] == ["site-a"]
    assert (await api.http.get(f"/v1/batches/{theirs.json()['batch_id']}", headers=a)).status_code == 404
    predictions = await api.http.get(f"/v1/batches/{theirs.json()['batch_id']}/predictions", headers=a)
    assert predictions.status_code == 404
    frame = await api.http.get(f"/v1/frames/{their_batch['frames'][0]['frame_id']}", headers=a)
    assert frame.status_code == 404
    cameras = (await api.http.get("/v1/cameras", headers=a)).json()["cameras"]
    assert {c["site_id"] for c in cameras} == {"site-a"}
