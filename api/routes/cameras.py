"""Live cameras: one frame at a time, gathered into batches by the camera's CameraStreamWorkflow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from api.callers import IngestCaller
from api.deps import CameraStreamsDep, SettingsDep
from api.schemas.batches import CameraFrameAccepted
from api.submission import check_id, check_webhook_url, read_uploads

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
    cameras: CameraStreamsDep,
    settings: SettingsDep,
    frame: Annotated[UploadFile, File(description="one JPEG, PNG or WebP image")],
    site_id: Annotated[str, Form(examples=["plant-a"])] = "default",
    webhook_url: Annotated[str | None, Form(description="alerts for this camera's batches")] = None,
) -> CameraFrameAccepted:
    check_id("camera_id", camera_id)
    check_id("site_id", site_id)
    webhook_url = check_webhook_url(webhook_url)
    (upload,) = await read_uploads([frame], settings)
    return await cameras.send(camera_id, site_id, webhook_url, upload, caller)
