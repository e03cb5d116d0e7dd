"""Frames uploaded one at a time under the caller's own prefix, to be named in a JSON batch later."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from api.callers import IngestCaller
from api.deps import UploadsDep
from api.schemas.batches import Uploaded
from api.services.uploads import UploadRefused

router = APIRouter(prefix="/v1/uploads", tags=["batches"])


@router.put(
    "/{name}",
    response_model=Uploaded,
    summary="Upload one frame (the raw image bytes as the body) under your own prefix",
    description="The frame is stored as `uploads/<your key id>/<name>`: name that key in a JSON batch "
    "submission. Uploads are write-once: putting the same bytes under the same name again is answered as "
    "the first time, other bytes under a name already used are refused (409). A batch names a copy of the "
    "frame at the content address of its bytes, so nothing submitted can change afterwards.",
    responses={409: {"description": "the name holds other bytes already"},
               413: {"description": "frame too large"}, 415: {"description": "not a JPEG, PNG or WebP"},
               422: {"description": "a name that is not allowed"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/webp": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def upload(name: str, request: Request, caller: IngestCaller, uploads: UploadsDep) -> Uploaded:
    try:
        return await uploads.put(caller, name, await request.body())
    except UploadRefused as refused:
        raise HTTPException(refused.status, str(refused)) from None
