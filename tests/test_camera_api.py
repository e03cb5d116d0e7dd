"""A live camera through the API: single frames become batches (by count, then by time)."""

from __future__ import annotations

import asyncio

import pytest

from tests.frames import jpeg_frame
from tests.polling import eventually


@pytest.mark.settings(camera_batch_max_frames=3, camera_batch_max_wait_s=1.0)
async def test_camera_frames_become_batches(api):
    for i in range(4):
        response = await api.http.post("/v1/cameras/live-1/frames", data={"site_id": "plant-z"},
                                       files={"frame": (f"{i}.jpg", jpeg_frame(700 + i), "image/jpeg")})
        assert response.status_code == 202, response.text
        assert response.json()["stream_workflow_id"] == "camera:plant-z:live-1"

    async def two_completed_batches():
        page = (await api.http.get("/v1/batches", params={"camera_id": "live-1", "status": "completed"})).json()
        return page["items"] if len(page["items"]) == 2 else None

    # Three frames cut a batch by count; the fourth waits max_wait_s, then goes alone.
    batches = await eventually(two_completed_batches, 60, "two batches from the camera stream")
    assert sorted(b["frame_count"] for b in batches) == [1, 3]
    assert {b["site_id"] for b in batches} == {"plant-z"}
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM audit_log WHERE action = 'camera.frame' "
                                 "AND workflow_id = 'camera:plant-z:live-1'")
        assert (await cur.fetchone())["n"] == 4
    await api.client.get_workflow_handle("camera:plant-z:live-1").signal("close")
    await asyncio.wait_for(api.client.get_workflow_handle("camera:plant-z:live-1").result(), 30)


async def test_camera_frame_limits(api):
    bad_type = await api.http.post("/v1/cameras/live-2/frames", files={"frame": ("a.gif", b"GIF89a", "image/gif")})
    assert bad_type.status_code == 415
    bad_hook = await api.http.post("/v1/cameras/live-2/frames", data={"webhook_url": "ftp://x"},
                                   files={"frame": ("a.jpg", jpeg_frame(1), "image/jpeg")})
    assert bad_hook.status_code == 422 and "http" in bad_hook.json()["detail"]
    reviewer = await api.http.post("/v1/cameras/live-2/frames", headers=api.auth("reviewer"),
                                   files={"frame": ("a.jpg", jpeg_frame(1), "image/jpeg")})
    assert reviewer.status_code == 403
