"""Frame batches: submit frames (multipart upload, or JSON naming stored objects), list batches, read
one batch with its per-frame results, and page through its predictions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.audit import record_audit
from api.callers import BatchReader, IngestCaller
from api.deps import DbDep, SettingsDep, StoreDep, TemporalDep
from api.frame_rows import frame_results
from api.metrics import BATCHES_SUBMITTED, FRAMES_SUBMITTED
from api.submission import check_count, check_id, check_webhook_url, read_uploads, routing_rules, ui_url
from api.schemas.batches import BatchAccepted, BatchDetail, BatchFromStore, BatchPage, BatchSummary, PredictionPage
from infra.settings import Settings
from infra.store import InvalidKeyError, ObjectNotFoundError, ObjectStore, put_frame, sha256_hex
from workflows import search_attributes as sa
from workflows.batch_types import (
    ID_PATTERN,
    WORKFLOW_NAME,
    FrameBatchInput,
    SubmittedFrame,
    batch_workflow_id,
)

router = APIRouter(prefix="/v1/batches", tags=["batches"])

_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["camera_id", "frames"],
    "properties": {
        "camera_id": {"type": "string", "pattern": ID_PATTERN, "example": "line-1"},
        "site_id": {"type": "string", "pattern": ID_PATTERN, "example": "plant-a"},
        "idempotency_key": {"type": "string", "pattern": ID_PATTERN,
                            "description": "same key, same batch; defaults to a digest of the frames"},
        "webhook_url": {"type": "string", "description": "alerts for confident defects are POSTed here, signed"},
        "frames": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "JPEG, PNG or WebP images, in order"},
    },
}


def _store_uploads(store: ObjectStore, frames: list[tuple[UploadFile, bytes]]) -> list[SubmittedFrame]:
    submitted = []
    for upload, data in frames:
        content_type = (upload.content_type or "application/octet-stream").split(";")[0].strip()
        key = put_frame(store, data, content_type)
        submitted.append(SubmittedFrame(key, len(data), upload.filename or "", content_type))
    return submitted


def _check_stored(store: ObjectStore, body: BatchFromStore, settings: Settings) -> list[SubmittedFrame]:
    check_count(len(body.frames), settings)
    submitted = []
    for position, frame in enumerate(body.frames):
        try:
            size = store.size(frame.object_key)
        except InvalidKeyError as exc:
            raise HTTPException(422, f"frame {position}: {exc}") from None
        except ObjectNotFoundError:
            raise HTTPException(422, f"frame {position}: no object {frame.object_key!r} in the store") from None
        if size > settings.max_frame_bytes:
            raise HTTPException(413, f"frame {position} ({frame.object_key}) exceeds the limit of "
                                     f"{settings.max_frame_bytes} bytes")
        submitted.append(SubmittedFrame(frame.object_key, size, frame.filename or frame.object_key.rsplit("/", 1)[-1]))
    return submitted


async def _batch_row(pool, batch_id: str) -> dict | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM batches WHERE batch_id = %s", (batch_id,))
        return await cur.fetchone()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    summary="Submit a batch of frames",
    description="Either `multipart/form-data` with the image files, or `application/json` naming objects "
    "already in the store. The batch runs as a `FrameBatchWorkflow` with id `batch-<camera>-<idempotency key>`.",
    responses={
        200: {"description": "the idempotency key named an existing batch; nothing new was started",
              "model": BatchAccepted},
        413: {"description": "too many frames, or a frame too large (the reason names the frame)"},
        415: {"description": "a frame of a type that is not accepted (the reason names the frame)"},
        422: {"description": "a missing or malformed field, or a named object that is not in the store"},
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
async def submit_batch(
    request: Request,
    response: Response,
    caller: IngestCaller,
    pool: DbDep,
    store: StoreDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> BatchAccepted:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = BatchFromStore.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
        camera_id, site_id, webhook_url = body.camera_id, body.site_id, body.webhook_url
        submitted = await asyncio.to_thread(_check_stored, store, body, settings)
        key = body.idempotency_key or request.headers.get("Idempotency-Key") or sha256_hex(
            "\n".join(f.object_key for f in submitted).encode()
        )[:32]
        uploads = None
    elif content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=settings.max_frames_per_batch + 1, max_fields=20)
        camera_id = str(form.get("camera_id") or "")
        site_id = str(form.get("site_id") or "default")
        webhook_url = str(form.get("webhook_url") or "") or None
        if not camera_id:
            raise HTTPException(422, "camera_id is required")
        files = [f for f in form.getlist("frames") if isinstance(f, UploadFile)]
        uploads = await read_uploads(files, settings)
        key = str(form.get("idempotency_key") or "") or request.headers.get("Idempotency-Key") or sha256_hex(
            b"".join(hashlib.sha256(d).digest() for _, d in uploads)
        )[:32]
    else:
        raise HTTPException(415, "send multipart/form-data with image files, or application/json naming stored objects")
    check_id("camera_id", camera_id)
    check_id("site_id", site_id)
    check_id("idempotency_key", key)
    webhook_url = check_webhook_url(webhook_url)
    batch_id = batch_workflow_id(camera_id, key)

    existing = await _batch_row(pool, batch_id)
    if existing and existing["status"] != "received":
        await _audit(pool, caller, batch_id, len(submitted) if uploads is None else len(uploads), created=False)
        response.status_code = status.HTTP_200_OK
        return _accepted(existing, settings, created=False)
    # A batch still 'received' may belong to a request that died before starting its workflow:
    # go through storing and starting again; both steps are idempotent.
    if uploads is not None:
        submitted = await asyncio.to_thread(_store_uploads, store, uploads)
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count, webhook_url)
            VALUES (%s, %s, %s, %s, 'received', %s, %s)
            ON CONFLICT (batch_id) DO NOTHING RETURNING *
            """,
            (batch_id, camera_id, site_id, key, len(submitted), webhook_url),
        )
        row = await cur.fetchone()
    created = row is not None
    # Start even when a concurrent request inserted the row first: USE_EXISTING makes the start
    # idempotent, and it repairs a request that died between the insert and the start.
    await temporal.start_workflow(
        WORKFLOW_NAME,
        FrameBatchInput(
            batch_id, camera_id, site_id, submitted,
            chunk_size=settings.classify_chunk_size,
            webhook_url=webhook_url,
            rules=routing_rules(settings),
            inference_task_queue=settings.inference_task_queue,
        ),
        id=batch_id,
        task_queue=settings.orchestration_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.CAMERA, camera_id),
                SearchAttributePair(sa.SITE, site_id),
                SearchAttributePair(sa.STATUS, "received"),
            ]
        ),
    )
    await _audit(pool, caller, batch_id, len(submitted), created=created)
    if created:
        BATCHES_SUBMITTED.inc()
        FRAMES_SUBMITTED.inc(len(submitted))
    else:
        response.status_code = status.HTTP_200_OK
        row = await _batch_row(pool, batch_id)
    return _accepted(row, settings, created=created)


async def _audit(pool, caller, batch_id: str, frames: int, created: bool) -> None:
    # A resubmit is audited too: who retried what, and that it changed nothing.
    async with pool.connection() as conn:
        await record_audit(conn, caller, "batch.create", f"batches/{batch_id}", workflow_id=batch_id,
                           details={"frames": frames, "created": created})


def _accepted(row: dict, settings: Settings, created: bool) -> BatchAccepted:
    return BatchAccepted(
        batch_id=row["batch_id"],
        workflow_id=row["batch_id"],
        status=row["status"],
        frame_count=row["frame_count"],
        created=created,
        temporal_ui_url=ui_url(settings, row["batch_id"]),
    )


def _summary(row: dict, settings: Settings) -> dict:
    done = row["completed_at"]
    return {
        **row,
        "duration_s": (done - row["created_at"]).total_seconds() if done else None,
        "temporal_ui_url": ui_url(settings, row["batch_id"]),
    }


def _encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def _decode_cursor(cursor: str) -> list:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise HTTPException(422, "cursor is not one this API returned") from None


@router.get("", response_model=BatchPage, summary="List batches, newest first")
async def list_batches(
    caller: BatchReader,
    pool: DbDep,
    settings: SettingsDep,
    camera_id: str | None = None,
    site_id: str | None = None,
    status_: Annotated[str | None, Query(alias="status", description="received, running, completed or failed")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> BatchPage:
    where, params = [], []
    for column, value in (("camera_id", camera_id), ("site_id", site_id), ("status", status_)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if created_after:
        where.append("created_at >= %s")
        params.append(created_after)
    if created_before:
        where.append("created_at < %s")
        params.append(created_before)
    if cursor:
        at, batch_id = _decode_cursor(cursor)
        where.append("(created_at, batch_id) < (%s::timestamptz, %s)")
        params += [at, batch_id]
    sql = "SELECT * FROM batches" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY created_at DESC, batch_id DESC LIMIT %s"
    async with pool.connection() as conn:
        cur = await conn.execute(sql, [*params, limit + 1])
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor([rows[-1]["created_at"].isoformat(), rows[-1]["batch_id"]]) if more else None
    return BatchPage(items=[BatchSummary(**_summary(r, settings)) for r in rows], next_cursor=next_cursor)


@router.get("/{batch_id}", response_model=BatchDetail, responses={404: {"description": "no such batch"}},
            summary="A batch: status, counts by class, rejections, review, timings, and every frame")
async def get_batch(batch_id: str, caller: BatchReader, pool: DbDep, settings: SettingsDep) -> BatchDetail:
    row = await _batch_row(pool, batch_id)
    if row is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    async with pool.connection() as conn:
        frames = await frame_results(conn, batch_id)
    return BatchDetail(**_summary(row, settings), frames=frames)


@router.get("/{batch_id}/predictions", response_model=PredictionPage, responses={404: {"description": "no such batch"}},
            summary="A batch's frames with their predictions, in position order")
async def batch_predictions(
    batch_id: str,
    caller: BatchReader,
    pool: DbDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> PredictionPage:
    if await _batch_row(pool, batch_id) is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    after = int(_decode_cursor(cursor)[0]) if cursor else -1
    async with pool.connection() as conn:
        frames = await frame_results(conn, batch_id, after_position=after, limit=limit + 1)
    more = len(frames) > limit
    frames = frames[:limit]
    return PredictionPage(items=frames, next_cursor=_encode_cursor([frames[-1].position]) if more else None)
