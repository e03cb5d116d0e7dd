"""Camera health on the quality features the real Ray Serve preprocessor computes (at the served model's
input size): the classification activity, calling serving, calibrates a generated camera on its first
frames and finds it blurred once its lens fogs, and a darkened camera dark. The rest of camera health
(webhooks, the API, site scopes) is tests/test_camera_health.py's."""

from __future__ import annotations

import uuid

from temporalio.testing import ActivityEnvironment

from activities.camera_health import CameraHealthMonitor
from activities.inference import InferenceActivities
from infra.db import DbPool
from infra.store import ObjectStore, put_frame
from infra.tables import camera_health
from infra.tables import frames as frame_rows
from serving.client import ServingClient
from vision.camera import Conditions, generate_frames
from workflows.batch_types import ClassifyBatchInput, RoutingRules, make_frame_id

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]

SITE = "health-serving"


async def _record(pool: DbPool, store: ObjectStore, camera: str, payloads: list[bytes]) -> str:
    batch_id = f"batch:{SITE}:{camera}:{uuid.uuid4().hex[:8]}"
    new = [frame_rows.NewFrame(make_frame_id(batch_id, i), i, put_frame(store, data), f"{i}.jpg", "image/jpeg",
                               len(data)) for i, data in enumerate(payloads)]
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, frame_count)"
                           " VALUES (%s, %s, %s, %s, %s)", (batch_id, camera, SITE, batch_id, len(new)))
        await frame_rows.insert(conn, batch_id, new)
    return batch_id


async def test_served_features_find_a_blurred_and_a_darkened_camera(
        serving_url, db_pool, model_store, production_model, temporal_client, settings_factory):
    settings = settings_factory(camera_health_calibration_frames=16)
    run = uuid.uuid4().hex[:6]
    states = {}
    async with ServingClient(serving_url) as client:
        classify = InferenceActivities(client, db_pool, None, CameraHealthMonitor(temporal_client, settings))
        for camera, fault in ((f"fogged-{run}", Conditions(blur=2.0)), (f"dimmed-{run}", Conditions(brightness=0.4))):
            for start, conditions in ((0, Conditions()), (16, fault)):
                payloads = [f.jpeg() for f in generate_frames("served-line", 16, seed=3, conditions=conditions,
                                                              start=start)]
                batch_id = await _record(db_pool, model_store, camera, payloads)
                result = await ActivityEnvironment().run(classify.classify_batch, ClassifyBatchInput(
                    batch_id, camera, SITE, 0, 16, RoutingRules(qa_sample_rate=0.0)))
                assert result.classified == 16
            async with db_pool.connection() as conn:
                states[camera] = await camera_health.get(conn, SITE, camera)
    fogged, dimmed = states[f"fogged-{run}"], states[f"dimmed-{run}"]
    assert fogged is not None and (fogged["state"], fogged["reasons"]) == ("degraded", ["blurred"])
    assert dimmed is not None and dimmed["state"] == "degraded" and "dark" in dimmed["reasons"]
    assert "blurred" not in dimmed["reasons"]
