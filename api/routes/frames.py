"""Single frames: prediction history, routes, and a time-limited image URL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from fastapi import APIRouter, HTTPException, Request, Response

from api.callers import FrameReader
from api.deps import DbDep, SettingsDep, StoreDep
from api.image_urls import check_signature, image_url
from api.schemas.batches import FrameDetail, Prediction
from infra.secret_key import secret_key
from infra.store import ObjectNotFoundError

router = APIRouter(prefix="/v1/frames", tags=["frames"])


async def _frame(pool, frame_id: str) -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM frames WHERE frame_id = %s", (frame_id,))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no frame {frame_id!r}")
    return row


@router.get("/{frame_id}", response_model=FrameDetail, responses={404: {"description": "no such frame"}})
async def get_frame(frame_id: str, request: Request, caller: FrameReader, pool: DbDep, store: StoreDep,
                    settings: SettingsDep) -> FrameDetail:
    frame = await _frame(pool, frame_id)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT model_version, label, confidence, probabilities, quality, created_at FROM predictions"
            " WHERE frame_id = %s ORDER BY created_at DESC",
            (frame_id,),
        )
        predictions = [Prediction(**row) for row in await cur.fetchall()]
        cur = await conn.execute("SELECT route || ':' || reason AS r FROM frame_routes WHERE frame_id = %s ORDER BY 1",
                                 (frame_id,))
        routes = [row["r"] for row in await cur.fetchall()]
    url, expires = await asyncio.to_thread(
        image_url, store, secret_key(settings), str(request.base_url), frame_id, frame["object_key"],
        settings.image_url_ttl_s,
    )
    return FrameDetail(**frame, predictions=predictions, routes=routes, image_url=url,
                       image_url_expires_at=datetime.fromtimestamp(expires, timezone.utc))


@router.get(
    "/{frame_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
               403: {"description": "expired or forged URL"}},
    summary="The frame's image, at the signed URL GET /v1/frames/{id} returned (no API key needed)",
)
async def frame_image(frame_id: str, expires: int, signature: str, pool: DbDep, store: StoreDep,
                      settings: SettingsDep) -> Response:
    refused = check_signature(secret_key(settings), frame_id, expires, signature)
    if refused:
        raise HTTPException(403, refused)
    frame = await _frame(pool, frame_id)
    try:
        data = await asyncio.to_thread(store.get, frame["object_key"])
    except ObjectNotFoundError:
        raise HTTPException(404, f"the image of frame {frame_id!r} is gone from the store") from None
    media = frame["content_type"] if frame["content_type"].startswith("image/") else "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=300"})
