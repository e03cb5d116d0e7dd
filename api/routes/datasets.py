"""Dataset exchange: export a dataset snapshot's boxes as COCO JSON or YOLO text, and import COCO boxes as
reviewed labels (api.services.dataset_exchange says what is matched and how). For ML engineers (and
admin). A key scoped to sites exports and labels the frames of its sites only. Imports are audited and
idempotent: the same file posted again by a key of the same scope changes nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from api.callers import DatasetExchanger
from api.deps import DbDep, StoreDep
from api.services.dataset_exchange import MAX_IMPORT_BYTES, DatasetExchange, SnapshotNotFound
from vision.boxes import BoxError

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


class LabelImport(BaseModel):
    import_id: str
    created: bool
    images: int
    annotations: int
    labelled_frames: int
    unmatched: list[str]
    unmatched_count: int


@router.get("/{snapshot_id}/export", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/zip": {}},
                             "description": "COCO JSON, or a zip of YOLO label files and classes.txt"},
                       404: {"description": "no such dataset snapshot"}},
            summary="A snapshot's frames and boxes as COCO JSON or YOLO text")
async def export_snapshot(
    snapshot_id: str, caller: DatasetExchanger, pool: DbDep,
    store: StoreDep,
    format: Annotated[str, Query(pattern="^(coco|yolo)$", description="coco (JSON) or yolo (zip)")] = "coco",
    generated: Annotated[bool, Query(description="also the generated base set with its drawn boxes")] = False,
) -> Response:
    try:
        out = await DatasetExchange(pool, store).export(snapshot_id, caller, format, generated)
    except SnapshotNotFound:
        raise HTTPException(404, f"no dataset snapshot {snapshot_id!r}") from None
    return Response(out.body, media_type=out.media_type, headers={
        "Content-Disposition": f'attachment; filename="{out.file_name}"',
        "X-Sightline-Images": str(out.images), "X-Sightline-Boxes": str(out.boxes)})


@router.post("/import", response_model=LabelImport,
             responses={413: {"description": "the file is larger than the import limit"},
                        422: {"description": "a malformed COCO file; `field` names what is wrong"}},
             summary="Import a COCO detection file's boxes as reviewed labels (images matched by sha256)")
async def import_coco(request: Request, caller: DatasetExchanger, pool: DbDep, store: StoreDep) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"the import is larger than {MAX_IMPORT_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_IMPORT_BYTES:
            raise HTTPException(413, f"the import is larger than {MAX_IMPORT_BYTES} bytes")
    try:
        result = await DatasetExchange(pool, store).import_coco(bytes(body), caller)
    except BoxError as exc:
        raise HTTPException(422, {"error": "InvalidCoco", "field": exc.field, "message": str(exc)}) from None
    return result
