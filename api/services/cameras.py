"""Live cameras: one frame at a time. Each camera's CameraStreamWorkflow (signal-with-start) gathers
frames into batches by count or time and starts a FrameBatchWorkflow for each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.audit import record_audit
from api.schemas.batches import CameraFrameAccepted, CameraList, CameraSummary
from api.services.batches import UnregisteredWebhook
from api.submission import Upload
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore, put_frame
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
    def __init__(self, pool: DbPool) -> None:
        self.pool = pool

    async def summary(self, caller: Principal, window_hours: float, site_id: str | None) -> CameraList:
        async with self.pool.connection() as conn:
            rows = await batches.per_camera(conn, window_hours, site_id,
                                            within=Scope(tuple(caller.site_ids), tuple(caller.camera_ids)))
        return CameraList(window_hours=window_hours, cameras=[CameraSummary(**row) for row in rows])


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
        key = await asyncio.to_thread(put_frame, self.store, upload.data, upload.content_type)
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
            start_signal_args=[CameraFrame(key, key.rsplit("/", 1)[-1], len(upload.data), upload.content_type,
                                           datetime.now(UTC).isoformat(), upload.filename)],
        )
        async with self.pool.connection() as conn:
            await record_audit(conn, caller, "camera.frame", f"cameras/{camera_id}", workflow_id=workflow_id,
                               details={"object_key": key, "site_id": site_id})
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
