"""Admission cannot leak: a batch whose request failed part-way never holds one of its site's slots for
good. A store that fails answers 503 with Retry-After and records nothing; a batch recorded but never
started (Temporal away, the API killed) is started or released by the stale-batch sweep; and a
resubmission is looked up before admission, so at the site's limit it still gets its batch."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.batch_sweep import BatchSweepActivities
from infra.store import put_frame
from infra.tables import batches, frames
from serving.client import ServingError
from tests.frames import jpeg_frame, multipart
from tests.history_recorder import HistoryRecorder
from tests.polling import eventually
from workers.orchestration import WORKFLOW_RUNNER
from workflows.batch_sweep import StaleBatchSweepWorkflow
from workflows.batch_sweep_types import BatchSweepInput, BatchSweepResult
from workflows.batch_types import batch_workflow_id, make_frame_id


async def status_of(api, batch_id: str) -> str | None:
    async with api.pool.connection() as conn:
        row = await batches.get(conn, batch_id)
    return row["status"] if row else None


async def in_flight(api, site: str) -> int:
    async with api.pool.connection() as conn:
        return await batches.in_flight(conn, site)


async def test_a_store_that_fails_answers_503_and_holds_no_slot(api):
    site, camera = f"site-{uuid.uuid4().hex[:6]}", "cam-store"
    root = Path(api.settings.object_store_url.removeprefix("file://"))
    form = {"camera_id": camera, "site_id": site, "idempotency_key": "k1"}
    files = multipart([("a.jpg", jpeg_frame(9400), "image/jpeg")])
    # The store's directory replaced by a file: every write fails as a broken disk's would.
    shutil.rmtree(root)
    root.write_bytes(b"not a directory")
    try:
        refused = await api.http.post("/v1/batches", data=form, files=files)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] and "object store" in refused.json()["detail"]
        assert await in_flight(api, site) == 0, "a batch whose frames were not stored holds no slot"
        assert await status_of(api, batch_workflow_id(site, camera, "k1")) is None
    finally:
        root.unlink()
        root.mkdir()
    accepted = await api.http.post("/v1/batches", data=form, files=files)
    assert accepted.status_code == 202 and accepted.json()["created"] is True

    async def completed() -> bool:
        return await status_of(api, accepted.json()["batch_id"]) == "completed"

    await eventually(completed, 60, "the batch, accepted once the store is back")


@pytest.mark.settings(max_batches_in_flight_per_site=1)
async def test_at_the_limit_a_resubmission_gets_its_batch(api):
    site = f"site-{uuid.uuid4().hex[:6]}"
    form = {"camera_id": "cam-limit", "site_id": site, "idempotency_key": "first"}
    files = multipart([("a.jpg", jpeg_frame(9500), "image/jpeg")])
    # Serving away: the batch keeps retrying its classification, holding the site's one slot.
    api.classifier.refusal = ServingError("serving unavailable", retryable=True, status=503)
    first = await api.http.post("/v1/batches", data=form, files=files)
    assert first.status_code == 202
    batch_id = first.json()["batch_id"]
    async def trying() -> bool:
        return api.classifier.calls > 0

    await eventually(trying, 30, "the batch trying to classify")

    again = await api.http.post("/v1/batches", data=form, files=files)
    assert again.status_code == 200, again.text
    assert again.json()["batch_id"] == batch_id and again.json()["created"] is False
    other = await api.http.post("/v1/batches", data={**form, "idempotency_key": "second"},
                                files=multipart([("b.jpg", jpeg_frame(9501), "image/jpeg")]))
    assert other.status_code == 429 and other.headers["Retry-After"]

    api.classifier.refusal = None

    async def completed() -> bool:
        return await status_of(api, batch_id) == "completed"

    await eventually(completed, 90, "the batch once serving is back")


async def record_without_start(api, site: str, camera: str, key: str, stored: bool) -> str:
    """What a request leaves when it dies between recording its batch and starting the workflow: the
    row 'received' and its frame rows, the frames stored (or, for a request before frames were stored
    first, not)."""
    batch_id = batch_workflow_id(site, camera, key)
    data = jpeg_frame(9600 + len(key))
    object_key = (await asyncio.to_thread(put_frame, api.store, data, "image/jpeg") if stored
                  else f"frames/sha256/00/{'0' * 64}")
    async with api.pool.connection() as conn, conn.transaction():
        await batches.admit(conn, batch_id=batch_id, camera_id=camera, site_id=site, idempotency_key=key,
                            frame_count=1, webhook_url=None, fingerprint="", max_in_flight=100)
        await frames.insert(conn, batch_id, [frames.NewFrame(make_frame_id(batch_id, 0), 0, object_key, "a.jpg",
                                                             "image/jpeg", len(data))])
        await conn.execute("UPDATE batches SET updated_at = now() - interval '10 minutes' WHERE batch_id = %s",
                           (batch_id,))
    return batch_id


async def sweep(client: Client, api, task_queue: str, record: HistoryRecorder | None = None) -> BatchSweepResult:
    activities = BatchSweepActivities(api.pool, api.store, client, api.settings)
    async with Worker(client, task_queue=task_queue, workflows=[StaleBatchSweepWorkflow],
                      activities=[activities.sweep_stale_batches], workflow_runner=WORKFLOW_RUNNER):
        handle = await client.start_workflow(StaleBatchSweepWorkflow.run, BatchSweepInput(older_than_s=60),
                                             id=f"sweep-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        result = await asyncio.wait_for(handle.result(), 60)
    if record is not None:
        await record(handle, "stale_batch_sweep_started_and_released")
    return result


async def test_the_sweep_starts_a_batch_whose_request_died_and_releases_one_that_can_never_run(
        api, record_history: HistoryRecorder):
    site = f"site-{uuid.uuid4().hex[:6]}"
    startable = await record_without_start(api, site, "cam-sweep", "crashed", stored=True)
    unstored = await record_without_start(api, site, "cam-sweep", "never-stored", stored=False)
    assert await in_flight(api, site) == 2

    result = await sweep(api.client, api, f"{api.settings.orchestration_task_queue}-sweep", record_history)
    assert startable in result.started and unstored in result.released

    async def completed() -> bool:
        return await status_of(api, startable) == "completed"

    await eventually(completed, 60, "the swept batch to run to completion")
    async with api.pool.connection() as conn:
        released = await batches.get(conn, unstored)
    assert released is not None and released["status"] == "failed" and "never stored" in released["failure_reason"]
    assert await in_flight(api, site) == 0, "neither holds a slot any more"
    # A second sweep finds nothing left to do.
    again = await sweep(api.client, api, f"{api.settings.orchestration_task_queue}-sweep2")
    assert startable not in again.started and unstored not in again.released + again.started
