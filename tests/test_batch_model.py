"""A batch names the model that answers it (POST /v1/batches `model`): a detection version serves one
camera's batch while production stays the classifier, on the real stack (API, Temporal worker, Postgres,
Ray Serve with a tiny detector registered beside the tiny production classifier). Unknown or malformed
models answer 422 naming the field, before anything is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from tests.frames import jpeg_frame, multipart
from tests.polling import eventually
from vision.camera import generate_frames
from vision.detector_training import DETECTOR_PROFILES, train_detector

pytest_plugins = ["tests.serving_fixtures"]


@dataclass
class Served:
    http: httpx.AsyncClient  # carries an ingest key


@pytest.fixture(scope="module")
def detection_version(registry, model_store):
    from vision.publishing import register_trained

    result = train_detector(DETECTOR_PROFILES["tiny"])
    return register_trained(registry, model_store, result, created_by="tests")


@pytest_asyncio.fixture
async def served(settings_factory, temporal_client, db_pool, api_keys, serving_url, model_store,
                 production_model) -> AsyncIterator[Served]:
    """The API and the workers on the session's real serving (frames stored where serving reads them)."""
    from api.main import create_app
    from serving.client import ServingClient
    from workers.inference import inference_worker
    from workers.orchestration import orchestration_worker

    settings = settings_factory(object_store_url=f"file://{model_store.root}", serving_url=serving_url)
    app = create_app(settings, temporal_client=temporal_client)
    async with app.router.lifespan_context(app), ServingClient(serving_url) as serving, \
            orchestration_worker(temporal_client, db_pool, app.state.store, settings), \
            inference_worker(temporal_client, serving, db_pool, settings), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://sightline.test", timeout=60,
                headers={"Authorization": f"Bearer {api_keys['ingest']}"}) as http:
        yield Served(http)


async def _finished(http: httpx.AsyncClient, batch_id: str) -> dict:
    async def done() -> dict | None:
        batch = (await http.get(f"/v1/batches/{batch_id}")).json()
        return batch if batch["status"] in ("completed", "failed") else None

    return await eventually(done, 120, f"batch {batch_id} to finish", interval=0.2)


async def test_a_batch_naming_a_detection_version_gets_boxes_while_production_stays_the_classifier(
        served, detection_version, production_model):
    frames = generate_frames("det-cam", 8, seed=41)
    files = multipart([(f"d{i}.jpg", f.jpeg(), "image/jpeg") for i, f in enumerate(frames)])
    form = {"camera_id": "det-cam", "site_id": "det-site", "idempotency_key": "det-1",
            "model": detection_version.version}
    response = await served.http.post("/v1/batches", data=form, files=files)
    assert response.status_code == 202, response.text
    batch = await _finished(served.http, response.json()["batch_id"])
    assert batch["status"] == "completed", batch.get("failure_reason")
    assert (batch["model"], batch["model_version"]) == (detection_version.version, detection_version.version)
    predictions = [f["prediction"] for f in batch["frames"]]
    assert all(p and p["model_version"] == detection_version.version and isinstance(p["boxes"], list)
               for p in predictions)
    assert any(p["boxes"] for p in predictions)
    assert all({"x0", "y0", "x1", "y1", "label", "score"} <= set(b) for p in predictions for b in p["boxes"])
    page = (await served.http.get(f"/v1/batches/{batch['batch_id']}/predictions")).json()
    assert [f["prediction"]["boxes"] for f in page["items"]] == [p["boxes"] for p in predictions]

    # The same request again is the same batch; the same frames and key for production are another request.
    again = await served.http.post("/v1/batches", data=form, files=files)
    assert again.status_code == 200 and again.json()["created"] is False
    other = await served.http.post("/v1/batches", data={**form, "model": "production"}, files=files)
    assert other.status_code == 409, other.text

    # A camera naming no model gets production, the classifier: no boxes.
    plain = await served.http.post("/v1/batches", data={"camera_id": "line-cam", "site_id": "det-site"},
                                   files=multipart([("c.jpg", frames[0].jpeg(), "image/jpeg")]))
    assert plain.status_code == 202, plain.text
    classified = await _finished(served.http, plain.json()["batch_id"])
    assert (classified["model"], classified["model_version"]) == ("production", production_model.version)
    assert classified["frames"][0]["prediction"]["boxes"] is None


@pytest.mark.parametrize("model", ["v999999", "staging", "not a model!", "x" * 65])
async def test_an_unknown_or_malformed_model_answers_422_naming_the_field(api, model):
    files = multipart([("a.jpg", jpeg_frame(7), "image/jpeg")])
    key = f"bad-model-{len(model)}-{model[:3].replace(' ', '')}"
    response = await api.http.post("/v1/batches", files=files,
                                   data={"camera_id": "cam-m", "idempotency_key": key, "model": model})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["field"] == "model"
    uploaded = await api.http.put(f"/v1/uploads/m-{key}.jpg", content=jpeg_frame(7),
                                  headers={"content-type": "image/jpeg"})
    assert uploaded.status_code in (200, 201), uploaded.text
    body = {"camera_id": "cam-m", "idempotency_key": key, "model": model,
            "frames": [{"object_key": uploaded.json()["object_key"]}]}
    as_json = await api.http.post("/v1/batches", json=body)
    assert as_json.status_code == 422, as_json.text
    assert as_json.json()["detail"]["field"] == "model"
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM batches WHERE idempotency_key = %s", (key,))
        assert (await cur.fetchone())["n"] == 0
