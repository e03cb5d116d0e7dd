"""Live cameras: one frame at a time. Each camera's CameraStreamWorkflow (signal-with-start) gathers
frames into batches by count or time and starts a FrameBatchWorkflow for each."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from api.audit import record_audit
from api.callers import IngestCaller
from api.deps import DbDep, SettingsDep, StoreDep, TemporalDep
from api.submission import check_id, check_webhook_url, read_uploads, routing_rules
from api.schemas.batches import CameraFrameAccepted
from infra.store import put_frame
from workflows.batch_types import FrameBatchInput
from workflows.camera_stream_types import (
    FRAME_SIGNAL,
    WORKFLOW_NAME,
    CameraFrame,
    CameraStreamInput,
    camera_workflow_id,
)

router = APIRouter(prefix="/v1/cameras", tags=["cameras"])


@router.post(
    "/{camera_id}/frames",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CameraFrameAccepted,
    summary="Send one frame from a live camera",
    description="The frame is stored and signalled to the camera's `CameraStreamWorkflow` "
    "(`camera-<camera_id>`, started on the first frame), which cuts batches by count or time.",
    responses={413: {"description": "frame too large"}, 415: {"description": "type not accepted"}},
)
async def camera_frame(
    camera_id: str,
    caller: IngestCaller,
    pool: DbDep,
    store: StoreDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    frame: Annotated[UploadFile, File(description="one JPEG, PNG or WebP image")],
    site_id: Annotated[str, Form(examples=["plant-a"])] = "default",
    webhook_url: Annotated[str | None, Form(description="alerts for this camera's batches")] = None,
) -> CameraFrameAccepted:
    check_id("camera_id", camera_id)
    check_id("site_id", site_id)
    webhook_url = check_webhook_url(webhook_url)
    ((upload, data),) = await read_uploads([frame], settings)
    content_type = (upload.content_type or "application/octet-stream").split(";")[0].strip()
    key = await asyncio.to_thread(put_frame, store, data, content_type)
    workflow_id = camera_workflow_id(camera_id)
    # The template every batch of this stream copies: the routing rules in force when the stream started.
    template = FrameBatchInput(
        "", camera_id, site_id, [], chunk_size=settings.classify_chunk_size, webhook_url=webhook_url,
        rules=routing_rules(settings), inference_task_queue=settings.inference_task_queue,
    )
    await temporal.start_workflow(
        WORKFLOW_NAME,
        CameraStreamInput(camera_id, site_id, max_frames=settings.camera_batch_max_frames,
                          max_wait_seconds=settings.camera_batch_max_wait_s, batch_template=template),
        id=workflow_id,
        task_queue=settings.orchestration_task_queue,
        start_signal=FRAME_SIGNAL,
        start_signal_args=[
            CameraFrame(key, key.rsplit("/", 1)[-1], len(data), content_type,
                        datetime.now(timezone.utc).isoformat(), upload.filename or "")
        ],
    )
    async with pool.connection() as conn:
        await record_audit(conn, caller, "camera.frame", f"cameras/{camera_id}", workflow_id=workflow_id,
                           details={"object_key": key, "site_id": site_id})
    return CameraFrameAccepted(camera_id=camera_id, stream_workflow_id=workflow_id, object_key=key)
