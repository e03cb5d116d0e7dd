"""Frame batches: submit frames, read a batch's status and per-frame results."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, HTTPException, Response, UploadFile, status
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.deps import DbDep, SettingsDep, StoreDep, TemporalDep
from api.schemas.batches import BatchAccepted, BatchDetail, FrameResult
from infra.settings import Settings
from infra.store import ObjectStore, put_frame, sha256_hex
from workflows import search_attributes as sa
from workflows.batch_types import (
    ID_PATTERN,
    WORKFLOW_NAME,
    FrameBatchInput,
    SubmittedFrame,
    batch_workflow_id,
)

router = APIRouter(prefix="/v1/batches", tags=["batches"])
_ID = re.compile(ID_PATTERN)
# Declared types that say nothing about the content; the workflow's decoder decides for those.
_UNTYPED = {"", "application/octet-stream"}


def ui_url(settings: Settings, workflow_id: str) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def _check_id(name: str, value: str) -> None:
    if not _ID.match(value):
        raise HTTPException(422, f"{name} {value!r} must be 1-128 characters of letters, digits, '.', '_' or '-'")


async def _read_frames(files: list[UploadFile], settings: Settings) -> list[tuple[UploadFile, bytes]]:
    if not files:
        raise HTTPException(422, "a batch needs at least one frame")
    if len(files) > settings.max_frames_per_batch:
        raise HTTPException(413, f"{len(files)} frames exceed the limit of {settings.max_frames_per_batch} per batch")
    frames = []
    for position, upload in enumerate(files):
        name = upload.filename or f"frame {position}"
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        if declared not in _UNTYPED and declared not in settings.accepted_content_types:
            raise HTTPException(
                415, f"frame {position} ({name}): type {declared} is not accepted; use one of "
                + ", ".join(settings.accepted_content_types),
            )
        data = await upload.read(settings.max_frame_bytes + 1)
        if len(data) > settings.max_frame_bytes:
            raise HTTPException(413, f"frame {position} ({name}) exceeds {settings.max_frame_bytes} bytes")
        frames.append((upload, data))
    return frames


def _store_frames(store: ObjectStore, frames: list[tuple[UploadFile, bytes]]) -> list[SubmittedFrame]:
    submitted = []
    for upload, data in frames:
        content_type = (upload.content_type or "application/octet-stream").split(";")[0].strip()
        key = put_frame(store, data, content_type)
        submitted.append(SubmittedFrame(key, len(data), upload.filename or "", content_type))
    return submitted


async def _batch_row(pool, batch_id: str) -> dict | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM batches WHERE batch_id = %s", (batch_id,))
        return await cur.fetchone()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    responses={
        200: {"description": "the idempotency key named an existing batch; nothing new was started"},
        413: {"description": "too many frames, or a frame too large"},
        415: {"description": "a frame of a type that is not accepted"},
        422: {"description": "a missing or malformed field"},
    },
)
async def submit_batch(
    response: Response,
    pool: DbDep,
    store: StoreDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    camera_id: Annotated[str, Form(description="the camera that took the frames", examples=["line-1"])],
    frames: Annotated[list[UploadFile], File(description="JPEG, PNG or WebP images, in order")],
    site_id: Annotated[str, Form(description="the site the camera is at", examples=["plant-a"])] = "default",
    idempotency_key: Annotated[
        str | None,
        Form(description="same key, same batch: a retried request never starts a second workflow; "
             "defaults to a digest of the frames"),
    ] = None,
    idempotency_header: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> BatchAccepted:
    _check_id("camera_id", camera_id)
    _check_id("site_id", site_id)
    data = await _read_frames(frames, settings)
    key = idempotency_key or idempotency_header or sha256_hex(
        b"".join(hashlib.sha256(d).digest() for _, d in data)
    )[:32]
    _check_id("idempotency_key", key)
    batch_id = batch_workflow_id(camera_id, key)

    existing = await _batch_row(pool, batch_id)
    if existing and existing["status"] != "received":
        response.status_code = status.HTTP_200_OK
        return _accepted(existing, settings, created=False)
    # A batch still 'received' may belong to a request that died before starting its workflow:
    # go through storing and starting again; both steps are idempotent.

    refs = await asyncio.to_thread(_store_frames, store, data)
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count)
            VALUES (%s, %s, %s, %s, 'received', %s)
            ON CONFLICT (batch_id) DO NOTHING RETURNING *
            """,
            (batch_id, camera_id, site_id, key, len(refs)),
        )
        row = await cur.fetchone()
    created = row is not None
    # Start even when a concurrent request inserted the row first: USE_EXISTING makes the start
    # idempotent, and it repairs a request that died between the insert and the start.
    await temporal.start_workflow(
        WORKFLOW_NAME,
        FrameBatchInput(batch_id, camera_id, site_id, refs, chunk_size=settings.classify_chunk_size),
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
    if not created:
        response.status_code = status.HTTP_200_OK
        row = await _batch_row(pool, batch_id)
    return _accepted(row, settings, created=created)


def _accepted(row: dict, settings: Settings, created: bool) -> BatchAccepted:
    return BatchAccepted(
        batch_id=row["batch_id"],
        workflow_id=row["batch_id"],
        status=row["status"],
        frame_count=row["frame_count"],
        created=created,
        temporal_ui_url=ui_url(settings, row["batch_id"]),
    )


@router.get("/{batch_id}", response_model=BatchDetail, responses={404: {"description": "no such batch"}})
async def get_batch(batch_id: str, pool: DbDep, settings: SettingsDep) -> BatchDetail:
    row = await _batch_row(pool, batch_id)
    if row is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM frames WHERE batch_id = %s ORDER BY position", (batch_id,))
        frames = await cur.fetchall()
    return BatchDetail(
        **row,
        temporal_ui_url=ui_url(settings, batch_id),
        frames=[FrameResult(**f) for f in frames],
    )
