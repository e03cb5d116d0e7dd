"""Sites kept apart in every id a caller can name: a key limited to one site can neither feed, read,
pre-claim nor re-run another site's camera stream or batch, even when both sites use the same camera
names and idempotency keys. Another site's id reads as not found."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from infra.store import frame_key, sha256_hex
from infra.tables.api_keys import create_key
from serving.client import ServingError
from tests.frames import jpeg_frame, multipart
from tests.polling import eventually


async def site_key(api, site: str, role: str = "ingest") -> dict[str, str]:
    async with api.pool.connection() as conn:
        key = await create_key(conn, f"{site} {role} {uuid.uuid4().hex[:6]}", role, site_ids=[site])
    return {"Authorization": f"Bearer {key.raw_key}"}


async def finished(api, batch_id: str, timeout: float = 60) -> dict:
    async def done() -> dict | None:
        response = await api.http.get(f"/v1/batches/{batch_id}")
        batch = response.json() if response.status_code == 200 else None
        return batch if batch and batch["status"] in ("completed", "failed") else None

    return await eventually(done, timeout, f"batch {batch_id} to finish")


@pytest.mark.settings(camera_batch_max_frames=2, camera_batch_max_wait_s=30.0)
async def test_a_camera_of_the_same_name_at_two_sites_feeds_two_streams(api):
    camera = f"line-{uuid.uuid4().hex[:6]}"
    at = {"plant-a": await site_key(api, "plant-a"), "plant-b": await site_key(api, "plant-b")}
    sent: dict[str, set[str]] = {"plant-a": set(), "plant-b": set()}
    streams = {}
    for i, site in enumerate(["plant-a", "plant-b", "plant-a", "plant-b"]):
        data = jpeg_frame(9100 + i)
        response = await api.http.post(f"/v1/cameras/{camera}/frames", headers=at[site], data={"site_id": site},
                                       files={"frame": (f"{i}.jpg", data, "image/jpeg")})
        assert response.status_code == 202, response.text
        streams[site] = response.json()["stream_workflow_id"]
        sent[site].add(frame_key(sha256_hex(data)))
    assert streams["plant-a"] != streams["plant-b"], "one camera name, two sites: two streams"

    async def two_batches() -> list[dict] | None:
        page = (await api.http.get("/v1/batches", params={"camera_id": camera})).json()["items"]
        return page if len(page) == 2 and all(b["status"] == "completed" for b in page) else None

    batches = await eventually(two_batches, 60, "a batch of two frames from each site's stream")
    for batch in batches:
        detail = (await api.http.get(f"/v1/batches/{batch['batch_id']}")).json()
        assert {f["object_key"] for f in detail["frames"]} == sent[batch["site_id"]], "frames stay at their site"
        assert batch["site_id"] in batch["batch_id"]
    # Each site's key sees its own batch only; the other's id is not found.
    for site, other in (("plant-a", "plant-b"), ("plant-b", "plant-a")):
        mine = (await api.http.get("/v1/batches", headers=at[site], params={"camera_id": camera})).json()["items"]
        assert [b["site_id"] for b in mine] == [site]
        theirs = next(b["batch_id"] for b in batches if b["site_id"] == other)
        assert (await api.http.get(f"/v1/batches/{theirs}", headers=at[site])).status_code == 404
    for stream in streams.values():
        await api.client.get_workflow_handle(stream).signal("close")
        await asyncio.wait_for(api.client.get_workflow_handle(stream).result(), 30)


async def test_the_same_camera_and_key_at_two_sites_are_two_batches(api):
    camera, key = f"cam-{uuid.uuid4().hex[:6]}", "shift-1"
    a, b = await site_key(api, "plant-a"), await site_key(api, "plant-b")
    frames = multipart([("x.jpg", jpeg_frame(9200), "image/jpeg")])
    form = {"camera_id": camera, "idempotency_key": key}
    theirs = await api.http.post("/v1/batches", headers=a, files=frames, data={**form, "site_id": "plant-a"})
    assert theirs.status_code == 202, theirs.text
    await finished(api, theirs.json()["batch_id"])

    # The same frames under the same camera and key at another site: that site's own new batch, never
    # plant-a's answered back (nor refused as a conflict with it).
    mine = await api.http.post("/v1/batches", headers=b, files=frames, data={**form, "site_id": "plant-b"})
    assert mine.status_code == 202 and mine.json()["created"] is True, mine.text
    assert mine.json()["batch_id"] != theirs.json()["batch_id"]
    # Other frames under that key at plant-b: a conflict with plant-b's own batch, not plant-a's.
    other = await api.http.post("/v1/batches", headers=b, data={**form, "site_id": "plant-b"},
                                files=multipart([("y.jpg", jpeg_frame(9201), "image/jpeg")]))
    assert other.status_code == 409 and mine.json()["batch_id"] in other.json()["detail"]
    assert theirs.json()["batch_id"] not in other.json()["detail"]
    done = await finished(api, mine.json()["batch_id"])
    assert done["site_id"] == "plant-b" and done["accepted_count"] == 1
    assert (await api.http.get(f"/v1/batches/{theirs.json()['batch_id']}", headers=b)).status_code == 404
    assert (await api.http.get(f"/v1/batches/{theirs.json()['batch_id']}/predictions", headers=b)).status_code == 404


async def test_another_sites_failed_batch_is_never_run_again_by_a_resubmission(api):
    camera, key = f"cam-{uuid.uuid4().hex[:6]}", "retry"
    a, b = await site_key(api, "plant-a"), await site_key(api, "plant-b")
    frames = multipart([("x.jpg", jpeg_frame(9300), "image/jpeg")])
    form = {"camera_id": camera, "idempotency_key": key}
    api.classifier.refusal = ServingError("model_not_found: no model version 'v404'", retryable=False, status=404)
    failed = await api.http.post("/v1/batches", headers=a, files=frames, data={**form, "site_id": "plant-a"})
    assert (await finished(api, failed.json()["batch_id"]))["status"] == "failed"
    api.classifier.refusal = None

    again = await api.http.post("/v1/batches", headers=b, files=frames, data={**form, "site_id": "plant-b"})
    assert again.status_code == 202 and again.json()["rerun"] is False and again.json()["created"] is True
    assert again.json()["batch_id"] != failed.json()["batch_id"]
    await finished(api, again.json()["batch_id"])
    theirs = (await api.http.get(f"/v1/batches/{failed.json()['batch_id']}")).json()
    assert theirs["status"] == "failed", "plant-a's batch is plant-a's to run again"
    runs = [w async for w in api.client.list_workflows(f"WorkflowId = '{failed.json()['batch_id']}'")]
    assert len(runs) == 1


async def test_a_stream_under_its_old_siteless_id_finishes_once_its_camera_sends_again(api):
    """Streams started before sites were part of their ids (`camera-<camera>`) get no frames any more;
    the first frame of that camera through the API closes such a stream, and the frames it held are
    batched under its own ids, not lost."""
    from workflows.batch_start import batch_input
    from workflows.camera_stream_types import FRAME_SIGNAL, CameraFrame, CameraStreamInput, legacy_camera_workflow_id

    camera = f"old-{uuid.uuid4().hex[:6]}"
    held = jpeg_frame(9700)
    key = frame_key(sha256_hex(held))
    await asyncio.to_thread(api.store.put, key, held, "image/jpeg")
    old = await api.client.start_workflow(
        "CameraStreamWorkflow", CameraStreamInput(camera, "plant-a", max_frames=10, max_wait_seconds=3600,
                                                  batch_template=batch_input(api.settings, "", camera, "plant-a",
                                                                             [], None)),
        id=legacy_camera_workflow_id(camera), task_queue=api.settings.orchestration_task_queue,
        start_signal=FRAME_SIGNAL, start_signal_args=[CameraFrame(key, sha256_hex(held), len(held), "image/jpeg")])
    response = await api.http.post(f"/v1/cameras/{camera}/frames", data={"site_id": "plant-a"},
                                   files={"frame": ("n.jpg", jpeg_frame(9701), "image/jpeg")})
    assert response.status_code == 202 and response.json()["stream_workflow_id"] != old.id
    result = await asyncio.wait_for(old.result(), 30)
    assert result["batches_started"] == 1
    batch = await finished(api, result["last_batch_id"])
    assert [f["object_key"] for f in batch["frames"]] == [key], "the frame it held is batched, not lost"
    new = api.client.get_workflow_handle(response.json()["stream_workflow_id"])
    await new.signal("close")
    await asyncio.wait_for(new.result(), 30)
