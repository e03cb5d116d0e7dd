"""Live cameras: one frame at a time. Each camera's CameraStreamWorkflow (signal-with-start) gathers
frames into batches by count or time and starts a FrameBatchWorkflow for each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.audit import record_audit
from api.schemas.batches import CameraFrameAccepted, CameraList, CameraSummary
from api.services import privacy
from api.services.batches import UnregisteredWebhook
from api.services.camera_health import CameraHealthService
from api.submission import Upload
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore, put_frames
from infra.tables import batches
from infra.tables.api_keys import Principal
from infra.tables.batches import Scope
from infra.tables.webhook_subscriptions import registered_webhook
from workflows.batch_start import batch_input
from workflows.camera_stream_types import (
    CLOSE_SIGNAL,
    FRAME_SIGNAL,
    WORKFLOW_NAME,
    CameraFrame,
    CameraStreamInput,
    camera_workflow_id,
    legacy_camera_workflow_id,
)

# Cameras whose stream under the id it had before sites were part of it this process has closed (or
# found gone): once per camera per process is enough, since no frame reaches such a stream any more.
_LEGACY_CLOSED: set[str] = set()


class CameraStats:
    def __init__(self, pool: DbPool, settings: Settings) -> None:
        self.pool = pool
        self.health = CameraHealthService(pool, settings)

    async def summary(self, caller: Principal, window_hours: float, site_id: str | None,
                      health: str | None = None) -> CameraList:
        """Each camera's totals over the window with its health; a camera whose health is known but that
        sent nothing within the window is listed too (a camera gone quiet is news to ops). `health`:
        only cameras in that state."""
        async with self.pool.connection() as conn:
            rows = await batches.per_camera(conn, window_hours, site_id,
                                            within=Scope(tuple(caller.site_ids), tuple(caller.camera_ids)))
        known = await self.health.of_cameras(caller, site_id, health)
        cameras = [CameraSummary(**row, health=known.pop((row["site_id"], row["camera_id"]), (None, None))[1])
                   for row in rows]
        cameras += [CameraSummary(camera_id=camera, site_id=site, batches=0, frames=0, classified=0, rejected=0,
                                  unfamiliar=0, defects=0, sent_to_review=0, health=view)
                    for (site, camera), (_, view) in known.items()]
        if health is not None:
            cameras = [c for c in cameras if c.health is not None and c.health.state == health]
        return CameraList(window_hours=window_hours, cameras=cameras)


class CameraStreams:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    async def send(self, camera_id: str, site_id: str, webhook_url: str | None, upload: Upload,
                   caller: Principal) -> CameraFrameAccepted:
        if webhook_url:
            async with self.pool.connection() as conn:
                if await registered_webhook(conn, webhook_url, site_id) is None:
                    raise UnregisteredWebhook(site_id)
        # Redacted first where the camera's settings say so (one cached lookup otherwise): only then stored.
        redaction = None
        settings = await privacy.in_force(self.pool, site_id, camera_id)
        if settings is not None:
            redaction = await privacy.redact_uploads([upload], settings, self.settings.max_frame_pixels)
        key = upload.object_key
        await asyncio.to_thread(put_frames, self.store, [(key, upload.data, upload.content_type)])
        workflow_id = camera_workflow_id(site_id, camera_id)
        # Every batch of this stream copies this template: the routing rules in force when it started.
        template = batch_input(self.settings, "", camera_id, site_id, [], webhook_url)
        await self.temporal.start_workflow(
            WORKFLOW_NAME,
            CameraStreamInput(camera_id, site_id, max_frames=self.settings.camera_batch_max_frames,
                              max_wait_seconds=self.settings.camera_batch_max_wait_s, batch_template=template),
            id=workflow_id,
            task_queue=self.settings.orchestration_task_queue,
            start_signal=FRAME_SIGNAL,
            start_signal_args=[CameraFrame(key, upload.sha256, len(upload.data), upload.content_type,
                                           datetime.now(UTC).isoformat(), upload.filename)],
        )
        async with self.pool.connection() as conn:
            details: dict[str, Any] = {"object_key": key, "site_id": site_id}
            if redaction is not None:
                details["redaction"] = redaction
            await record_audit(conn, caller, "camera.frame", f"cameras/{camera_id}", workflow_id=workflow_id,
                               details=details)
        await self._close_legacy_stream(camera_id)
        return CameraFrameAccepted(camera_id=camera_id, site_id=site_id, stream_workflow_id=workflow_id,
                                   object_key=key)

    async def _close_legacy_stream(self, camera_id: str) -> None:
        """A stream running under the id it had before sites were part of it (`camera-<camera>`) gets no
        frames any more: ask it to close, which batches what it still holds under its own ids and ends
        it. Closing takes nothing from anyone: the frames it holds are batched as they would have been."""
        if camera_id in _LEGACY_CLOSED:
            return
        handle = self.temporal.get_workflow_handle(legacy_camera_workflow_id(camera_id))
        try:
            await handle.signal(CLOSE_SIGNAL)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # gone already is what we want; anything else: next time
                return
        _LEGACY_CLOSED.add(camera_id)
