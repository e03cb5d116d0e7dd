"""Camera health: a camera whose image quality leaves the range calibrated on its own first frames, or
whose image froze, is degraded with the reason, announced with a signed `camera.degraded` webhook (and
`camera.recovered` when it is seen well again), listed by GET /v1/cameras within the caller's sites, and
recalibrated by ops. Generated cameras: one blurred, one darkened, one frozen (the same frame sent again
in new batches), one left alone."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from rich.console import Console

from activities.camera_health import CameraHealthMonitor
from cli.camera_health import print_camera_health
from infra.outbound_addresses import AddressPolicy
from infra.store import put_frame
from infra.tables import frames as frame_rows
from infra.tables import predictions
from infra.tables.api_keys import create_key
from infra.tables.webhook_subscriptions import get_subscription_by_url, register_webhook
from infra.webhook_signatures import verify
from tests.frames import multipart
from tests.polling import eventually
from tests.webhook_receiver import Receiver
from vision.camera import Conditions, generate_frames
from vision.camera_health import (
    DEGRADED_EVENT,
    RECOVERED_EVENT,
    CameraState,
    ChunkStats,
    HealthPolicy,
    Moments,
    judge,
)
from workflows.batch_types import make_frame_id

SITE = "health-site"
CALIBRATION = 8
FROZEN_AFTER = 6


# ---- the rule itself, on numbers ----

def _chunk(n: int, brightness: float, sharpness: float, sha: str = "", run: int = 0) -> ChunkStats:
    def moments(mean: float, spread: float) -> Moments:
        values = [mean + spread * ((i % 3) - 1) for i in range(n)]
        return Moments(n, sum(values), sum(v * v for v in values))

    return ChunkStats(n, {"brightness": moments(brightness, 0.02), "rel_contrast": moments(0.56, 0.05),
                          "rel_sharpness": moments(sharpness, 0.1)},
                      leading_sha256=sha, leading_run=run, trailing_sha256=sha, trailing_run=run,
                      single_run=bool(sha) and run == n, longest_run=run)


def test_a_camera_calibrates_then_degrades_and_recovers_once_each():
    policy = HealthPolicy(calibration_frames=16, frozen_frames=6)
    state = CameraState()
    first = judge(state, _chunk(8, 0.35, 0.58), policy)
    assert first.camera.state == "calibrating" and first.event is None
    calibrated = judge(first.camera, _chunk(8, 0.35, 0.58), policy)
    assert calibrated.camera.state == "healthy" and calibrated.just_calibrated and calibrated.event is None
    blurred = judge(calibrated.camera, _chunk(16, 0.35, 0.04), policy)
    assert blurred.camera.reasons == ["blurred"] and blurred.event == DEGRADED_EVENT
    still = judge(blurred.camera, _chunk(16, 0.35, 0.04), policy)
    assert still.event is None and not still.state_changed  # announced once
    recovered = judge(still.camera, _chunk(16, 0.35, 0.58), policy)
    assert recovered.camera.state == "healthy" and recovered.event == RECOVERED_EVENT


def test_a_frozen_run_is_carried_across_chunks_and_ends_with_a_new_frame():
    policy = HealthPolicy(calibration_frames=8, frozen_frames=6)
    healthy = judge(CameraState(), _chunk(8, 0.35, 0.58), policy).camera
    four = judge(healthy, _chunk(4, 0.35, 0.58, "aa", 4), policy)
    assert four.camera.repeated_frames == 4 and four.camera.state == "healthy"
    eight = judge(four.camera, _chunk(4, 0.35, 0.58, "aa", 4), policy)
    assert eight.camera.repeated_frames == 8 and eight.camera.reasons == ["frozen"]
    moving = judge(eight.camera, _chunk(4, 0.35, 0.58, "bb", 1), policy)
    assert moving.camera.state == "healthy" and moving.event == RECOVERED_EVENT


def test_frozen_frames_do_not_calibrate_a_camera():
    policy = HealthPolicy(calibration_frames=8, frozen_frames=6)
    judged = judge(CameraState(), _chunk(8, 0.35, 0.58, "aa", 8), policy)
    assert judged.camera.reasons == ["frozen"] and not judged.camera.calibration


# ---- in Postgres: once per chunk, however often the activity is retried ----

async def test_a_chunk_is_judged_once_and_a_retry_announces_the_same_event(db_pool, temporal_client,
                                                                           settings_factory, local_store):
    settings = settings_factory(camera_health_calibration_frames=4, camera_health_frozen_frames=3)
    monitor = CameraHealthMonitor(temporal_client, settings)
    camera = f"cam-{uuid.uuid4().hex[:6]}"
    frozen = generate_frames(camera, 1, seed=5)[0].jpeg()
    normal = [f.jpeg() for f in generate_frames(camera, 4, seed=4)]

    async def batch(payloads: list[bytes]) -> str:
        batch_id = f"batch:{SITE}:{camera}:{uuid.uuid4().hex[:8]}"
        async with db_pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, frame_count)"
                               " VALUES (%s, %s, %s, %s, %s)", (batch_id, camera, SITE, batch_id, len(payloads)))
            new = [frame_rows.NewFrame(make_frame_id(batch_id, i), i, put_frame(local_store, data), f"{i}.jpg",
                                       "image/jpeg", len(data), f"{i}-{len(data)}" if data != frozen else "same")
                   for i, data in enumerate(payloads)]
            await frame_rows.insert(conn, batch_id, new)
            await frame_rows.record_validation(conn, [frame_rows.Validation(f.frame_id, True, f.sha256)
                                                      for f in new])
            await predictions.upsert(conn, [predictions.NewPrediction(
                f.frame_id, "v-test", "ok", 0.99, {"ok": 0.99}, {"brightness": 0.35, "contrast": 0.2,
                                                                 "sharpness": 0.023 + 0.001 * f.position},
                {}) for f in new])
        return batch_id

    async def evaluate(batch_id: str, end: int):
        async with db_pool.connection() as conn, conn.transaction():
            return await monitor.evaluate(conn, batch_id=batch_id, start=0, end=end, site_id=SITE,
                                          camera_id=camera, webhook_url="http://127.0.0.1:9/hook")

    assert await evaluate(await batch(normal), 4) is None  # calibrated: healthy, nothing to announce
    stuck = await batch([frozen] * 3)
    first = await evaluate(stuck, 3)
    assert first is not None and first.event == DEGRADED_EVENT and first.payload["reasons"] == ["frozen"]
    again = await evaluate(stuck, 3)  # the retry: judged already, the same announcement
    assert again == first
    async with db_pool.connection() as conn:
        cur = await conn.execute("SELECT to_state, event FROM camera_health_events WHERE site_id = %s"
                                 " AND camera_id = %s ORDER BY seq", (SITE, camera))
        assert [(r["to_state"], r["event"]) for r in await cur.fetchall()] == [
            ("healthy", None), ("degraded", DEGRADED_EVENT)]
        cur = await conn.execute("SELECT repeated_frames, state FROM camera_health WHERE site_id = %s"
                                 " AND camera_id = %s", (SITE, camera))
        assert await cur.fetchone() == {"repeated_frames": 3, "state": "degraded"}


# ---- end to end through the API, the workers and a webhook receiver ----

async def _submit(api, camera: str, key: str, payloads: list[bytes], webhook_url: str) -> str:
    response = await api.http.post(
        "/v1/batches", data={"camera_id": camera, "site_id": SITE, "idempotency_key": key, "webhook_url": webhook_url},
        files=multipart([(f"{key}-{i}.jpg", data, "image/jpeg") for i, data in enumerate(payloads)]))
    assert response.status_code == 202, response.text
    batch_id: str = response.json()["batch_id"]
    await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
    return batch_id


def _frames(start: int, conditions: Conditions | None = None, count: int = CALIBRATION) -> list[bytes]:
    """Frames of one generated line (the same whatever the test run's camera ids), from `start` on."""
    return [f.jpeg() for f in generate_frames("health-line", count, seed=11, conditions=conditions or Conditions(),
                                              start=start)]


async def _cameras(api, headers: dict[str, str] | None = None) -> dict[str, dict]:
    response = await api.http.get("/v1/cameras", params={"site_id": SITE}, headers=headers)
    assert response.status_code == 200, response.text
    return {c["camera_id"]: c for c in response.json()["cameras"]}


def _events(receiver: Receiver, event: str) -> dict[str, tuple[dict, bytes]]:
    found = {}
    for headers, body in list(receiver.requests):
        envelope = json.loads(body)
        if envelope["event"] == event:
            found[envelope["data"]["camera_id"]] = (headers, body)
    return found


@pytest.mark.settings(camera_health_calibration_frames=CALIBRATION, camera_health_frozen_frames=FROZEN_AFTER)
async def test_blurred_darkened_and_frozen_cameras_are_degraded_announced_and_listed(api):
    api.classifier.measure_quality = True
    run = uuid.uuid4().hex[:6]
    blur, dark, frozen, fine = (f"{name}-{run}" for name in ("blur", "dark", "frozen", "fine"))
    with Receiver([]) as receiver:
        async with api.pool.connection() as conn:
            await register_webhook(conn, receiver.url, SITE,
                                   AddressPolicy.allowing(api.settings.webhook_allowed_networks))

        # Each camera calibrates on its first frames, as installed.
        await asyncio.gather(*(_submit(api, cam, "calibrate", _frames(i * CALIBRATION), receiver.url)
                               for i, cam in enumerate((blur, dark, frozen, fine))))
        listed = await _cameras(api)
        assert {listed[c]["health"]["state"] for c in (blur, dark, frozen, fine)} == {"healthy"}

        # Then the lens fogs, the light dims, the image freezes (the same frame again, in new batches).
        # A batch of 16 frames: the camera's recent average (over about 8 frames) has left its range.
        still = _frames(100, count=1)[0]
        await asyncio.gather(
            _submit(api, blur, "fogged", _frames(100, Conditions(blur=2.0), 16), receiver.url),
            _submit(api, dark, "dimmed", _frames(200, Conditions(brightness=0.4), 16), receiver.url),
            _submit(api, fine, "as-ever", _frames(300, count=16), receiver.url),
            _submit(api, frozen, "frozen-1", [still] * 4, receiver.url))
        await _submit(api, frozen, "frozen-2", [still] * 4, receiver.url)  # the run carries over: 8 >= 6

        listed = await _cameras(api)
        health = {cam: listed[cam]["health"] for cam in (blur, dark, frozen, fine)}
        assert health[fine]["state"] == "healthy" and health[fine]["reasons"] == []
        assert health[blur]["state"] == "degraded" and health[blur]["reasons"] == ["blurred"]
        assert health[dark]["state"] == "degraded" and "dark" in health[dark]["reasons"]
        assert "blurred" not in health[dark]["reasons"]
        assert health[frozen]["state"] == "degraded" and "frozen" in health[frozen]["reasons"]
        assert health[frozen]["repeated_frames"] == 8
        assert health[blur]["ranges"]["rel_sharpness"]["recent"] < health[blur]["ranges"]["rel_sharpness"]["low"]
        degraded = (await api.http.get("/v1/cameras", params={"site_id": SITE, "health": "degraded"})).json()
        assert {c["camera_id"] for c in degraded["cameras"]} >= {blur, dark, frozen}
        assert fine not in {c["camera_id"] for c in degraded["cameras"]}
        # `sightline status` lists them under the stack's parts.
        console = Console(record=True, width=240)
        assert await asyncio.to_thread(print_camera_health, console, api.settings.database_url) >= 3
        shown = console.export_text()
        assert blur in shown and "blurred" in shown and frozen in shown and fine not in shown

        # One signed camera.degraded per degraded camera; none for the healthy one.
        announced = await eventually(
            lambda: _wait_for(receiver, DEGRADED_EVENT, {blur, dark, frozen}), 30, "three camera.degraded webhooks")
        async with api.pool.connection() as conn:
            subscription = await get_subscription_by_url(conn, receiver.url)
        assert subscription is not None
        for headers, body in announced.values():
            assert verify(subscription.secret, body, headers["x-sightline-signature"])
            assert headers["x-sightline-event"] == DEGRADED_EVENT
            data = json.loads(body)["data"]
            assert data["site_id"] == SITE and data["state"] == "degraded" and data["kind"] == "maintenance"
        assert json.loads(announced[blur][1])["data"]["reasons"] == ["blurred"]
        assert fine not in announced
        # No drift check and no retraining came of it: maintenance is not a reason to retrain.
        async with api.pool.connection() as conn:
            cur = await conn.execute("SELECT (SELECT count(*) FROM drift_reports WHERE site_id = %s)"
                                     " + (SELECT count(*) FROM retraining_decisions WHERE site_id = %s) AS n",
                                     (SITE, SITE))
            assert (await cur.fetchone())["n"] == 0

        # Another site's key sees none of it; a key of this site does.
        async with api.pool.connection() as conn:
            other = (await create_key(conn, f"other {run}", "ops", site_ids=["other-site"])).raw_key
            ours = (await create_key(conn, f"ours {run}", "ops", site_ids=[SITE])).raw_key
        theirs = await api.http.get("/v1/cameras", headers={"Authorization": f"Bearer {other}"})
        assert theirs.status_code == 200 and not [c for c in theirs.json()["cameras"] if c["site_id"] == SITE]
        hidden = await api.http.get(f"/v1/cameras/{blur}/health", params={"site_id": SITE},
                                    headers={"Authorization": f"Bearer {other}"})
        assert hidden.status_code == 404
        detail = await api.http.get(f"/v1/cameras/{blur}/health", params={"site_id": SITE},
                                    headers={"Authorization": f"Bearer {ours}"})
        assert detail.status_code == 200
        assert [e["to_state"] for e in detail.json()["events"]][:2] == ["degraded", "healthy"]
        refused = await api.http.post(f"/v1/cameras/{dark}/health/recalibrate", json={"site_id": SITE},
                                      headers={"Authorization": f"Bearer {other}"})
        assert refused.status_code == 404

        # The lens is cleaned: the blurred camera is seen well again, and announced recovered.
        await _submit(api, blur, "cleaned", _frames(400, count=16), receiver.url)
        # The dimmed line is the new normal: ops recalibrate the camera; once calibrated it is healthy again.
        recalibrated = await api.http.post(f"/v1/cameras/{dark}/health/recalibrate",
                                           json={"site_id": SITE, "reason": "new lamps, dimmer on purpose"},
                                           headers=api.auth("ops"))
        assert recalibrated.status_code == 200, recalibrated.text
        assert recalibrated.json()["health"]["state"] == "calibrating"
        assert recalibrated.json()["events"][0]["actor"].startswith("test ops")
        bad = await api.http.post(f"/v1/cameras/{dark}/health/recalibrate", json={"site_id": "no such site!"},
                                  headers=api.auth("ops"))
        assert bad.status_code == 422 and "site_id" in bad.text
        await _submit(api, dark, "dimmer", _frames(500, Conditions(brightness=0.4)), receiver.url)
        recovered = await eventually(
            lambda: _wait_for(receiver, RECOVERED_EVENT, {blur, dark}), 30, "two camera.recovered webhooks")
        assert json.loads(recovered[blur][1])["data"]["previous_state"] == "degraded"
        assert json.loads(recovered[dark][1])["data"]["previous_state"] == "calibrating"
        listed = await _cameras(api)
        assert listed[blur]["health"]["state"] == listed[dark]["health"]["state"] == "healthy"
        async with api.pool.connection() as conn:
            cur = await conn.execute("SELECT role, details FROM audit_log WHERE action = 'camera.recalibrate'"
                                     " AND resource = %s", (f"cameras/{SITE}/{dark}",))
            audit = await cur.fetchall()
        assert [(a["role"], a["details"]["reason"]) for a in audit] == [("ops", "new lamps, dimmer on purpose")]


async def _wait_for(receiver: Receiver, event: str, cameras: set[str]) -> dict[str, tuple[dict, bytes]] | None:
    found = _events(receiver, event)
    return found if cameras <= set(found) else None
