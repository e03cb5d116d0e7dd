"""Live cameras: one frame at a time, gathered into batches by the camera's CameraStreamWorkflow."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from starlette.datastructures import UploadFile

from api.auth import require_scope
from api.callers import BatchReader, CameraMaintainer, IngestCaller
from api.deps import CameraHealthDep, CameraStatsDep, CameraStreamsDep, SettingsDep
from api.schemas.batches import CameraFrameAccepted, CameraList
from api.schemas.camera_health import CameraHealthDetail, HealthState, RecalibrateRequest
from api.services.batches import UnregisteredWebhook
from api.services.camera_health import CameraNotFound
from api.services.privacy import RedactionRefused
from api.submission import FORM_LIMITS, check_id, check_webhook_url, read_uploads
from workflows.batch_types import NAME_PATTERN

router = APIRouter(prefix="/v1/cameras", tags=["cameras"])


@router.get("", response_model=CameraList, summary="Cameras with their frame totals over a window: "
            "frames, rejections, unfamiliar frames, defects, reviews; and each camera's health")
async def list_cameras(
    caller: BatchReader, stats: CameraStatsDep, site_id: str | None = None,
    window_hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
    health: Annotated[HealthState | None, Query(description="only cameras in this health state")] = None,
) -> CameraList:
    return await stats.summary(caller, window_hours, site_id, health)


@router.get("/{camera_id}/health", response_model=CameraHealthDetail,
            responses={404: {"description": "no such camera"}},
            summary="A camera's health against its calibrated range, and its recent changes of state")
async def camera_health_detail(camera_id: str, caller: BatchReader, health: CameraHealthDep,
                               site_id: Annotated[str, Query(pattern=NAME_PATTERN)] = "default") -> CameraHealthDetail:
    check_id("camera_id", camera_id)
    try:
        return await health.detail(caller, site_id, camera_id)
    except CameraNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{camera_id}/health/recalibrate", response_model=CameraHealthDetail,
             responses={404: {"description": "no such camera"}},
             summary="Calibrate a camera's range again on its next frames (after maintenance or a deliberate change)",
             description="The camera calibrates on its next frames as it did when first seen; a degraded camera is "
             "announced `camera.recovered` once its frames are judged healthy. Ops only; audited.")
async def recalibrate_camera(camera_id: str, body: RecalibrateRequest, caller: CameraMaintainer,
                             health: CameraHealthDep) -> CameraHealthDetail:
    check_id("camera_id", camera_id)
    try:
        return await health.recalibrate(caller, body.site_id, camera_id, body.reason)
    except CameraNotFound as exc:
        raise HTTPException(404, str(exc)) from None


_FRAME_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["frame"],
    "properties": {
        "frame": {"type": "string", "format": "binary", "description": "one JPEG, PNG or WebP image"},
        "site_id": {"type": "string", "pattern": NAME_PATTERN, "example": "plant-a"},
        "webhook_url": {"type": "string", "description": "alerts for this camera's batches"},
    },
}


@router.post(
    "/{camera_id}/frames",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CameraFrameAccepted,
    summary="Send one frame from a live camera",
    description="The frame is stored and signalled to the site's stream of that camera, a "
    "`CameraStreamWorkflow` (`camera:<site_id>:<camera_id>`, started on the first frame), which cuts "
    "batches by count or time.",
    responses={413: {"description": "frame too large"}, 415: {"description": "type not accepted"}},
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FRAME_FORM}}}},
)
async def camera_frame(camera_id: str, request: Request, caller: IngestCaller, cameras: CameraStreamsDep,
                       settings: SettingsDep) -> CameraFrameAccepted:
    # The form is read here, after the key was checked, not by FastAPI before the dependencies run.
    check_id("camera_id", camera_id)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send multipart/form-data with one `frame` file")
    # `async with`: the form's spooled files are closed when the frame has been read, whatever happens.
    async with request.form(max_files=1, max_fields=FORM_LIMITS["max_fields"],
                            max_part_size=FORM_LIMITS["max_part_size"]) as form:
        frame = form.get("frame")
        if not isinstance(frame, UploadFile):
            raise HTTPException(422, "a `frame` file is required")
        site_id = check_id("site_id", str(form.get("site_id") or "default"))
        # The stream is the site's own (`camera:<site>:<camera>`): a key of one site reaches no other's.
        require_scope(caller, site_id, camera_id)
        webhook_url = check_webhook_url(str(form.get("webhook_url") or "") or None)
        (upload,) = await read_uploads([frame], settings)
    try:
        return await cameras.send(camera_id, site_id, webhook_url, upload, caller)
    except (UnregisteredWebhook, RedactionRefused) as refused:
        raise HTTPException(422, str(refused)) from None
