"""Single frames: prediction history, routes, and a time-limited image URL."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from api.callers import FrameReader
from api.deps import FrameServiceDep
from api.image_urls import IMAGE_HEADERS, MalformedSignature
from api.schemas.batches import FrameDetail
from api.services.frames import FrameNotFound, ImageRefused

router = APIRouter(prefix="/v1/frames", tags=["frames"])


@router.get("/{frame_id}", response_model=FrameDetail, responses={404: {"description": "no such frame"}})
async def get_frame(frame_id: str, request: Request, caller: FrameReader, frames: FrameServiceDep) -> FrameDetail:
    try:
        return await frames.detail(frame_id, str(request.base_url), caller)
    except FrameNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get(
    "/{frame_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
               400: {"description": "a malformed signature"}, 403: {"description": "expired or forged URL"}},
    summary="The frame's image, at the signed URL GET /v1/frames/{id} returned (no API key needed)",
)
async def frame_image(frame_id: str, expires: int, signature: str, frames: FrameServiceDep) -> Response:
    try:
        image = await frames.image(frame_id, expires, signature)
    except MalformedSignature as exc:
        raise HTTPException(400, str(exc)) from None
    except ImageRefused as exc:
        raise HTTPException(403, str(exc)) from None
    except FrameNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(image.data, media_type=image.media_type,
                    headers={**IMAGE_HEADERS, "Cache-Control": "private, max-age=300"})
