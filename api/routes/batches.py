"""Frame batches: submit frames (multipart upload, or JSON naming stored objects), list batches, read
one batch with its per-frame results, and page through its predictions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from api.auth import require_scope
from api.callers import BatchReader, IngestCaller
from api.deps import BatchServiceDep, DbDep, SettingsDep, StoreDep
from api.schemas.batches import MODEL_DESCRIPTION, BatchAccepted, BatchDetail, BatchPage, PredictionPage
from api.services import privacy
from api.services.batches import (
    AdmissionRefused,
    ConflictingResubmission,
    InvalidCursor,
    UnknownModel,
    UnregisteredWebhook,
)
from api.services.privacy import RedactionRefused
from api.submission import model_refused, read_submission
from workflows.batch_types import DEFAULT_MODEL, KEY_PATTERN, MODEL_PATTERN, NAME_PATTERN

router = APIRouter(prefix="/v1/batches", tags=["batches"])

_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["camera_id", "frames"],
    "properties": {
        "camera_id": {"type": "string", "pattern": NAME_PATTERN, "example": "line-1"},
        "site_id": {"type": "string", "pattern": NAME_PATTERN, "example": "plant-a"},
        "idempotency_key": {"type": "string", "pattern": KEY_PATTERN,
                            "description": "same key, same batch; defaults to a digest of the frames"},
        "webhook_url": {"type": "string", "description": "alerts for confident defects are POSTed here, signed"},
        "model": {"type": "string", "pattern": MODEL_PATTERN, "default": DEFAULT_MODEL, "example": "v7",
                  "description": MODEL_DESCRIPTION},
        "frames": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "JPEG, PNG or WebP images, in order"},
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such batch"}}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    summary="Submit a batch of frames",
    description="Either `multipart/form-data` with the image files, or `application/json` naming objects "
    "already in the store. The batch runs as a `FrameBatchWorkflow` with id `batch:<camera>:<idempotency key>`.",
    responses={
        200: {"description": "the idempotency key named an existing batch; nothing new was started "
                             "(a failed batch is run again instead, answered 202)", "model": BatchAccepted},
        409: {"description": "the idempotency key names a batch of other frames"},
        429: {"description": "the site has as many batches in flight as it may; retry after `Retry-After` s"},
        413: {"description": "too many frames, or a frame too large (the reason names the frame)"},
        415: {"description": "a frame of a type that is not accepted (the reason names the frame)"},
        422: {"description": "a missing or malformed field, a named object that is not in the store, or a `model` "
                             "that names no version or alias (`detail.field` is `model`)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchFromStore"}},
            },
        }
    },
)
async def submit_batch(request: Request, response: Response, caller: IngestCaller, batches: BatchServiceDep,
                       store: StoreDep, settings: SettingsDep, pool: DbDep) -> BatchAccepted:
    async def redacting(site_id: str, camera_id: str) -> bool:
        # Out of the caller's scope: not for it to learn (require_scope answers 403 below).
        return caller.allows(site_id, camera_id) and await privacy.in_force(pool, site_id, camera_id) is not None

    try:
        submission = await read_submission(request, store, settings, caller, redacting)
        require_scope(caller, submission.site_id, submission.camera_id)
        accepted = await batches.submit(submission, caller)
    except AdmissionRefused as refused:
        raise HTTPException(429, str(refused), headers={"Retry-After": str(refused.retry_after_s)}) from None
    except ConflictingResubmission as conflict:
        raise HTTPException(409, str(conflict)) from None
    except UnknownModel as unknown:
        raise model_refused(unknown.model, unknown.why) from None
    except (UnregisteredWebhook, RedactionRefused) as refused:
        raise HTTPException(422, str(refused)) from None
    if not (accepted.created or accepted.rerun):  # nothing new was started
        response.status_code = status.HTTP_200_OK
    return accepted


@router.get("", response_model=BatchPage, summary="List batches, newest first")
async def list_batches(
    caller: BatchReader,
    batches: BatchServiceDep,
    camera_id: str | None = None,
    site_id: str | None = None,
    status_: Annotated[str | None, Query(alias="status", description="received, running, completed or failed")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> BatchPage:
    try:
        return await batches.page(caller, camera_id=camera_id, site_id=site_id, status=status_,
                                  created_after=created_after, created_before=created_before, limit=limit,
                                  cursor=cursor)
    except InvalidCursor as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/{batch_id}", response_model=BatchDetail, responses=_NOT_FOUND,
            summary="A batch: status, counts by class, rejections, review, timings, and every frame")
async def get_batch(batch_id: str, caller: BatchReader, batches: BatchServiceDep) -> BatchDetail:
    detail = await batches.detail(batch_id, caller)
    if detail is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return detail


@router.get("/{batch_id}/predictions", response_model=PredictionPage, responses=_NOT_FOUND,
            summary="A batch's frames with their predictions, in position order")
async def batch_predictions(
    batch_id: str,
    caller: BatchReader,
    batches: BatchServiceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> PredictionPage:
    try:
        page = await batches.predictions(batch_id, caller, limit, cursor)
    except InvalidCursor as exc:
        raise HTTPException(400, str(exc)) from None
    if page is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return page
