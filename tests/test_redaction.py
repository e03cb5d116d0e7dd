"""Redaction before storage on the real stack (API, Postgres, Temporal, the store): privacy settings put
through the API, a real photo with a face (scikit-image's data.astronaut()) submitted, and what the
store and the frame's record hold afterwards."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import simplejpeg
from PIL import Image
from skimage import data

from infra.store import frame_key, redacted_frame_key, sha256_hex
from infra.tables.api_keys import create_key
from tests.frames import jpeg_frame, truncated_jpeg
from tests.polling import eventually
from vision.redaction import encode_jpeg

SITE = "privacy-plant"
FILL = [0.75, 0.75, 1.0, 1.0]  # the bottom-right corner, filled black
MCU = 16


def astronaut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pixels(jpeg: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(jpeg).astype(np.int16)


async def put_privacy(api, path: str, body: dict[str, Any], role: str = "ops") -> Any:
    return await api.http.put(f"/v1/sites/{path}/privacy", json=body, headers=api.auth(role))


async def submit(api, camera: str, key: str, frames: list[bytes], site: str = SITE) -> Any:
    return await api.http.post("/v1/batches", data={"camera_id": camera, "site_id": site, "idempotency_key": key},
                               files=[("frames", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(frames)])


async def frame_row(api, batch_id: str) -> dict[str, Any]:
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM frames WHERE batch_id = %s ORDER BY position", (batch_id,))
        return (await cur.fetchall())[0]


async def completed(api, batch_id: str) -> None:
    async def done() -> bool:
        return (await api.http.get(f"/v1/batches/{batch_id}")).json()["status"] == "completed"
    await eventually(done, 60, f"batch {batch_id} completed")


def stored_anywhere(store, digest: str) -> list[str]:
    """Keys of objects whose bytes have this sha256 (a walk of the whole store)."""
    return [k for k in store.list() if sha256_hex(store.get(k)) == digest]


async def test_a_face_is_blurred_a_region_filled_and_the_raw_frame_never_stored(api):
    put = await put_privacy(api, f"{SITE}/cameras/lobby", {"faces": True, "regions": [{"mode": "fill", "rect": FILL}],
                                                           "reason": "people walk through the lobby"})
    assert put.status_code == 200, put.text
    revision = put.json()["settings"]["revision"]
    assert put.json()["created"] is True and put.json()["redacting"] is True
    same = {"faces": True, "regions": [{"mode": "fill", "rect": FILL}]}
    again = await put_privacy(api, f"{SITE}/cameras/lobby", same)
    assert again.json()["created"] is False and again.json()["settings"]["revision"] == revision  # a retried PUT

    raw = astronaut_jpeg()
    received = sha256_hex(raw)
    response = await submit(api, "lobby", "astronaut-1", [raw])
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    row = await frame_row(api, batch_id)
    # The record: the received bytes' sha256 (the frame's identity), the revision that ran, the redacted key.
    assert row["sha256"] == received and row["redaction_revision"] == revision
    assert row["object_key"] == redacted_frame_key(received, revision) and row["content_type"] == "image/jpeg"
    stored = api.store.get(row["object_key"])
    assert stored != raw and row["size_bytes"] == len(stored)
    # The raw bytes are nowhere in the store: not at their content address, not under any key.
    assert not api.store.exists(frame_key(received)) and stored_anywhere(api.store, received) == []

    original, redacted = pixels(raw), pixels(stored)
    # The face (at about 177-272 x 66-161 in data.astronaut()) changed by a measured amount (25.6 levels).
    face = np.abs(redacted[66:161, 177:272] - original[66:161, 177:272]).mean()
    assert face > 15, f"the face changed by {face:.1f} grey levels only"
    # The region is filled: black, a few pixels in from its edges.
    assert redacted[392:510, 392:510].max() <= 3
    # The rest: the received pixels, composited untouched, then one JPEG encode (quality 90, 4:2:0). Away
    # from the 16x16 blocks the redaction touched (the face box with its margin: 162-286 x 51-175) the pixels
    # are bit-identical to the original encoded the same way, and within the encode's drift of what was
    # sent (measured: mean 0.47 grey levels, 99% of pixels within 4).
    rest = np.ones(original.shape[:2], bool)
    rest[48 - 2:176 + 2, 160 - 2:288 + 2] = False
    rest[384 - 2:, 384 - 2:] = False
    assert np.array_equal(redacted[rest], pixels(encode_jpeg(original.astype(np.uint8)))[rest])
    drift = np.abs(redacted - original)[rest]
    assert drift.mean() < 1.0 and np.percentile(drift, 99) <= 6

    # The batch runs on the redacted bytes; the decoder's digest (of those) does not replace the identity.
    await completed(api, batch_id)
    row = await frame_row(api, batch_id)
    assert row["status"] == "accepted" and row["sha256"] == received and row["redaction_revision"] == revision
    detail = (await api.http.get(f"/v1/batches/{batch_id}")).json()
    assert detail["frames"][0]["redaction_revision"] == revision

    # The same request again is the same batch, even after the settings moved on (the key of a
    # resubmission is the received bytes', never where the redacted frame is stored).
    assert (await put_privacy(api, f"{SITE}/cameras/lobby", {"faces": True})).json()["created"] is True
    resubmitted = await submit(api, "lobby", "astronaut-1", [raw])
    assert resubmitted.status_code == 200, resubmitted.text
    assert resubmitted.json()["batch_id"] == batch_id and resubmitted.json()["created"] is False
    assert stored_anywhere(api.store, received) == []

    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT details FROM audit_log WHERE action = 'privacy.put' "
                                 "AND resource = %s ORDER BY audit_id", (f"sites/{SITE}/cameras/lobby/privacy",))
        audited = [r["details"] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT details FROM audit_log WHERE action = 'batch.create' "
                                 "AND resource = %s ORDER BY audit_id LIMIT 1", (f"batches/{batch_id}",))
        created = (await cur.fetchone())["details"]
    assert [a["created"] for a in audited] == [True, False, True] and audited[0]["revision"] == revision
    assert created["redaction"] == {"revision": revision, "faces": 1, "regions": 1, "frames": 1}


async def test_a_camera_without_settings_is_stored_byte_for_byte(api):
    # Its site has a default for another camera only: this one has nothing in force.
    assert (await put_privacy(api, f"{SITE}/cameras/entrance", {"faces": True})).status_code == 200
    raw = jpeg_frame(2401, size=128)
    response = await submit(api, "line-3", "plain-1", [raw])
    assert response.status_code == 202, response.text
    row = await frame_row(api, response.json()["batch_id"])
    assert row["object_key"] == frame_key(sha256_hex(raw)) and row["redaction_revision"] is None
    assert api.store.get(row["object_key"]) == raw
    again = await submit(api, "line-3", "plain-1", [raw])
    assert again.status_code == 200 and again.json()["batch_id"] == response.json()["batch_id"]


@pytest.mark.settings(camera_batch_max_frames=1)
async def test_a_site_default_redacts_its_cameras_live_frames_too(api):
    site = "privacy-site-default"
    put = await put_privacy(api, site, {"regions": [{"mode": "fill", "polygon": [[0, 0], [1, 0], [0, 1]]}]})
    assert put.status_code == 200, put.text
    revision = put.json()["settings"]["revision"]
    read = (await api.http.get(f"/v1/sites/{site}/cameras/dock/privacy")).json()  # an ingest key may read
    assert read["settings"] is None and read["in_force"]["revision"] == revision and read["redacting"] is True

    raw = jpeg_frame(2402, size=128)
    sent = await api.http.post("/v1/cameras/dock/frames", data={"site_id": site},
                               files={"frame": ("d.jpg", raw, "image/jpeg")})
    assert sent.status_code == 202, sent.text
    key = sent.json()["object_key"]
    assert key == redacted_frame_key(sha256_hex(raw), revision) and api.store.get(key) != raw
    assert pixels(api.store.get(key))[4:40, 4:40].max() <= 3  # the top-left triangle is filled
    assert stored_anywhere(api.store, sha256_hex(raw)) == []

    async def the_streams_batch() -> dict[str, Any] | None:
        page = (await api.http.get("/v1/batches", params={"camera_id": "dock", "site_id": site})).json()
        return page["items"][0] if page["items"] else None
    batch = await eventually(the_streams_batch, 60, "the stream's batch")
    # The stream carried the key only; the frame's record reads the received sha256 and the revision from it.
    row = await frame_row(api, batch["batch_id"])
    assert row["sha256"] == sha256_hex(raw) and row["redaction_revision"] == revision
    await api.client.get_workflow_handle(f"camera:{site}:dock").signal("close")


async def test_frames_that_cannot_be_redacted_are_refused_and_nothing_is_stored(api):
    camera = f"{SITE}/cameras/vault"
    blurred = {"regions": [{"mode": "blur", "rect": [0, 0, 0.5, 0.5]}]}
    assert (await put_privacy(api, camera, blurred)).status_code == 200
    broken = truncated_jpeg(2403)
    refused = await submit(api, "vault", "broken-1", [jpeg_frame(2404), broken])
    assert refused.status_code == 422, refused.text
    assert "frame 1" in refused.json()["detail"] and "redacted" in refused.json()["detail"]
    revision = (await api.http.get(f"/v1/sites/{camera}/privacy")).json()["in_force"]["revision"]
    first = sha256_hex(jpeg_frame(2404))
    assert not api.store.exists(frame_key(first)) and not api.store.exists(redacted_frame_key(first, revision))
    # A JSON batch names uploads, which were stored as sent: refused for a redacted camera, nothing copied.
    upload = await api.http.put("/v1/uploads/vault-1.jpg", content=jpeg_frame(2405))
    assert upload.status_code in (200, 201), upload.text
    named = await api.http.post("/v1/batches", json={"camera_id": "vault", "site_id": SITE,
                                                     "frames": [{"object_key": upload.json()["object_key"]}]})
    assert named.status_code == 422 and "camera_id 'vault'" in named.json()["detail"]
    assert not api.store.exists(frame_key(sha256_hex(jpeg_frame(2405))))


@pytest.mark.parametrize(("region", "field"), [
    ({"mode": "blur", "rect": [0, 0, 1.5, 1]}, "rect"),
    ({"mode": "fill", "polygon": [[0, 0], [1, 1]]}, "polygon"),
    ({"mode": "smudge", "rect": [0, 0, 1, 1]}, "mode"),
    ({"mode": "blur", "polygon": [[0, 0], [-0.1, 1], [1, 1]]}, "polygon"),
])
async def test_bad_settings_answer_422_naming_the_field(api, region, field):
    response = await put_privacy(api, f"{SITE}/cameras/bad", {"faces": False, "regions": [region]})
    assert response.status_code == 422, response.text
    locations = [err["loc"] for err in response.json()["detail"]]
    assert any(field in loc and "regions" in loc for loc in locations), locations


async def test_who_may_change_and_read_privacy_settings(api):
    body = {"faces": True}
    assert (await put_privacy(api, f"{SITE}/cameras/c1", body, role="ingest")).status_code == 403
    assert (await put_privacy(api, f"{SITE}/cameras/c1", body, role="ml-engineer")).status_code == 403
    assert (await put_privacy(api, f"{SITE}/cameras/c1", body, role="admin")).status_code == 200
    async with api.pool.connection() as conn:
        scoped = await create_key(conn, "privacy-other-site", "ops", site_ids=["elsewhere"])
    other = {"Authorization": f"Bearer {scoped.raw_key}"}
    refused = await api.http.put(f"/v1/sites/{SITE}/cameras/c1/privacy", json=body, headers=other)
    assert refused.status_code == 403 and "elsewhere" in refused.json()["detail"]
    assert (await api.http.get(f"/v1/sites/{SITE}/privacy", headers=other)).status_code == 403
    assert (await api.http.put("/v1/sites/elsewhere/privacy", json=body, headers=other)).status_code == 200


async def test_the_edge_agent_redacts_with_the_central_settings_before_it_queues(api, tmp_path):
    from edge.capture import Capture, CaptureRefused
    from edge.central_api import CentralApi
    from edge.metrics import EdgeMetrics
    from edge.model import ModelKeeper
    from edge.queue import FrameQueue
    from edge.redaction import Redaction
    from edge.settings import EdgeSettings

    site = "privacy-edge"
    put = await put_privacy(api, f"{site}/cameras/gate", {"faces": True, "regions": [{"mode": "fill", "rect": FILL}]})
    revision = put.json()["settings"]["revision"]
    settings = EdgeSettings(_env_file=None, data_dir=tmp_path / "edge", site_id=site, model_ref="",
                            trusted_keys=["unused"], redact_cameras=["vault"])
    central = CentralApi("http://sightline.test", api.keys["ingest"], 10)
    await central.http.aclose()
    central.http = api.http  # the API in this process (its ASGI transport), with the ingest key an agent has
    metrics = EdgeMetrics()

    def capture_on(queue: FrameQueue, source) -> Capture:
        redaction = Redaction(settings.redact_cameras, central=source, meta=(queue.get_meta, queue.set_meta))
        return Capture(queue, ModelKeeper(None, settings, metrics), redaction, settings, metrics,  # type: ignore[arg-type]
                       lambda: None)

    queue = FrameQueue(settings.resolved_data_dir / "queue", settings.max_queue_bytes)
    capture = capture_on(queue, lambda camera: central.privacy(site, camera))
    raw = astronaut_jpeg()
    taken = await capture.take(raw, camera_id="gate", filename="gate-1.jpg")
    plain = jpeg_frame(2406, size=128)
    untouched = await capture.take(plain, camera_id="yard", filename="yard-1.jpg")  # no settings: as it came
    batch = queue.cut_batch(max_frames=1, max_bytes=10**8, max_wait_s=0, order="oldest-first", live_window_s=10)
    assert batch is not None and batch.camera_id == "gate"
    queued = queue.read(batch.frames[0])
    # What the queue holds (and will send) is the redacted frame, the API's own redaction of it.
    from vision.redaction import RedactionSettings, Region, redact
    expected = redact(raw, RedactionSettings(revision, True, (Region.rect(0.75, 0.75, 1.0, 1.0, "fill"),))).data
    assert queued == expected and taken.sha256 == sha256_hex(expected) != sha256_hex(raw)
    assert pixels(queued)[392:510, 392:510].max() <= 3
    assert untouched.sha256 == sha256_hex(plain)

    # Restarted while the API is away: the settings kept in the queue's database still redact; a camera
    # that must never leave raw, with no settings known, is refused.
    queue.close()
    queue = FrameQueue(settings.resolved_data_dir / "queue", settings.max_queue_bytes)

    async def away(camera: str) -> None:
        raise ConnectionError("the API is away")

    offline = capture_on(queue, away)
    again = await offline.take(raw, camera_id="gate", filename="gate-2.jpg")
    assert again.sha256 == sha256_hex(expected)
    with pytest.raises(CaptureRefused) as refused:
        await offline.take(plain, camera_id="vault")
    assert refused.value.status == 422 and "must be redacted" in str(refused.value)
    queue.close()


def test_the_cli_sets_and_shows_privacy_settings(postgres_url, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from infra.settings import get_settings

    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        env = {"COLUMNS": "300"}
        first = runner.invoke(app, ["privacy", "set", "--site", "privacy-cli", "--camera", "dock", "--faces",
                                    "--region", "0,0,0.5,0.5:fill", "--region", "0.5,0.5;1,0.5;1,1",
                                    "--reason", "loading bay"], env=env)
        assert first.exit_code == 0, first.output
        assert "new revision" in first.output and "faces on" in first.output
        assert "fill [0.0, 0.0, 0.5, 0.5]" in first.output
        again = runner.invoke(app, ["privacy", "set", "--site", "privacy-cli", "--camera", "dock", "--faces",
                                    "--region", "0,0,0.5,0.5:fill", "--region", "0.5,0.5;1,0.5;1,1"], env=env)
        assert again.exit_code == 0 and "unchanged" in again.output
        shown = runner.invoke(app, ["privacy", "show", "--site", "privacy-cli", "--camera", "dock"], env=env)
        assert shown.exit_code == 0 and "in force: revision" in shown.output
        assert "frames are redacted before they are stored" in shown.output
        bad = runner.invoke(app, ["privacy", "set", "--site", "privacy-cli", "--region", "0,0;1,1:fill"], env=env)
        assert bad.exit_code != 0 and "polygon" in bad.output
    finally:
        get_settings.cache_clear()
