"""Dataset snapshots leaving for other tools (COCO JSON, YOLO text) and COCO boxes coming back as reviewed
labels. The formats are vision.box_formats'; this service finds the frames, applies the key's scope and
writes the import.

Export: the snapshot's frames with recorded boxes (reviewed box sets; with `generated`, the generated set's
drawn boxes too, rendered from the snapshot's spec once and kept in the store). A key scoped to sites or
cameras exports the reviewed frames of its scope only; the generated frames belong to no site.

Import: images are matched to accepted frames by sha256 (vision.box_formats), within the key's scope; each
matched frame gets the file's boxes as its reviewed label, its label the largest box's class ('ok' when
none). The import's id is the sha256 of the file and the key's scope, so the same file posted again
changes nothing; images that match no frame are answered, not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from api.audit import record_audit
from infra.db import DbPool
from infra.store import ObjectStore, sha256_hex
from infra.tables import dataset_snapshots, label_imports
from infra.tables.api_keys import Principal
from vision.box_formats import (
    CocoImage,
    ExportImage,
    coco_document,
    export_classes,
    parse_coco,
    yolo_files,
    zip_of,
)
from vision.boxes import Box, boxes_from
from vision.camera import generate_frames
from vision.datasets import GENERATED, REVIEWED, BaseSetSpec, SnapshotEntry, read_manifest
from workflows.review_types import NO_DEFECT, box_decision_label

FORMATS = ("coco", "yolo")
MAX_IMPORT_BYTES = 64 * 1024 * 1024
_EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tif"}


class SnapshotNotFound(LookupError):
    pass


@dataclass
class Export:
    body: bytes
    media_type: str
    file_name: str
    images: int
    boxes: int


@dataclass
class ImportResult:
    import_id: str
    created: bool  # False: this file was imported before by a key of the same scope; nothing changed
    images: int
    annotations: int
    labelled_frames: int
    unmatched: list[str]  # file names of images that match no frame in scope (at most 100 listed)
    unmatched_count: int


def _generated_boxes_key(base: BaseSetSpec) -> str:
    digest = hashlib.sha256(json.dumps(base.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return f"datasets/base-{digest}/boxes.json"


def generated_boxes(store: ObjectStore, base: BaseSetSpec) -> dict[str, list[dict[str, Any]]]:
    """name (<camera>/<index>) -> the boxes the generator drew on that frame, for every generated frame
    of the spec. Rendering takes tens of ms a frame on these cores, so it is done once per spec and kept
    next to the spec's stored frames."""
    key = _generated_boxes_key(base)
    if store.exists(key):
        cached: dict[str, list[dict[str, Any]]] = json.loads(store.get(key))
        return cached
    out: dict[str, list[dict[str, Any]]] = {}
    for _, camera_id, seed, count, conditions in base.split_sources():
        for frame in generate_frames(camera_id, count, seed, conditions, base.classes):
            out[f"{camera_id}/{frame.index}"] = [b.as_dict() for b in frame.boxes]
    store.put(key, json.dumps(out, sort_keys=True).encode(), "application/json")
    return out


class DatasetExchange:
    def __init__(self, pool: DbPool, store: ObjectStore) -> None:
        self.pool = pool
        self.store = store

    # ---- export ---------------------------------------------------------------------------------
    async def export(self, snapshot_id: str, principal: Principal, fmt: str, generated: bool = False) -> Export:
        async with self.pool.connection() as conn:
            row = await dataset_snapshots.get(conn, snapshot_id)
        if row is None:
            raise SnapshotNotFound(snapshot_id)
        manifest = await asyncio.to_thread(read_manifest, self.store, row["manifest_key"], row["manifest_sha256"])
        reviewed = [e for e in manifest.entries if e.source == REVIEWED and e.boxes is not None]
        async with self.pool.connection() as conn:
            frames = await label_imports.frames_by_id(conn, [e.name for e in reviewed])
        if principal.scoped:
            reviewed = [e for e in reviewed if e.name in frames
                        and principal.allows(frames[e.name]["site_id"], frames[e.name]["camera_id"])]
        images = await asyncio.to_thread(self._images, reviewed, frames, manifest.base, manifest.entries, generated)
        classes = export_classes(images, [c for c in manifest.base.classes if c != NO_DEFECT])
        boxes = sum(len(i.boxes) for i in images)
        stem = f"{snapshot_id}-{fmt}"
        if fmt == "coco":
            info = {"description": f"Sightline dataset snapshot {snapshot_id}", "snapshot_id": snapshot_id,
                    "manifest_sha256": row["manifest_sha256"], "generated_included": generated,
                    "scoped_to_sites": list(principal.site_ids), "scoped_to_cameras": list(principal.camera_ids)}
            body = json.dumps(coco_document(images, classes, info), sort_keys=True).encode()
            return Export(body, "application/json", f"{stem}.json", len(images), boxes)
        return Export(zip_of(yolo_files(images, classes)), "application/zip", f"{stem}.zip", len(images), boxes)

    def _images(self, reviewed: list[SnapshotEntry], frames: dict[str, Any], base: BaseSetSpec,
                entries: list[SnapshotEntry], generated: bool) -> list[ExportImage]:
        out = []
        for e in reviewed:
            frame = frames.get(e.name) or {}
            width, height, fmt = frame.get("width"), frame.get("height"), frame.get("image_format")
            if not width or not height or not fmt:
                width, height, fmt = self._header(e.key)
            out.append(ExportImage(e.sha256, _EXTENSIONS.get(str(fmt).lower(), "img"), int(width), int(height),
                                   boxes_from(e.boxes or []), e.split, e.source, e.name))
        if generated:
            drawn = generated_boxes(self.store, base)
            size = None
            for e in entries:
                if e.source != GENERATED or e.name not in drawn:
                    continue
                size = size or self._header(e.key)[:2]  # every generated frame has the spec's size
                out.append(ExportImage(e.sha256, "jpg", size[0], size[1],
                                       [Box.from_dict(b) for b in drawn[e.name] if b["label"] in base.classes],
                                       e.split, e.source, e.name))
        return out

    def _header(self, key: str) -> tuple[int, int, str]:
        with Image.open(io.BytesIO(self.store.get(key))) as image:
            return image.width, image.height, (image.format or "img").lower()

    # ---- import ---------------------------------------------------------------------------------
    async def import_coco(self, data: bytes, principal: Principal) -> ImportResult:
        """Raises BoxError (a 422 naming the field) for a malformed file, before anything is written."""
        images = parse_coco(data)
        file_sha = sha256_hex(data)
        scope = json.dumps([sorted(principal.site_ids), sorted(principal.camera_ids)])
        import_id = "coco-" + hashlib.sha256(f"{file_sha}\n{scope}".encode()).hexdigest()[:24]
        by_sha: dict[str, list[CocoImage]] = {}
        for image in images:
            by_sha.setdefault(image.sha256, []).append(image)
        labels, matched = [], set()
        async with self.pool.connection() as conn:
            frames = await label_imports.frames_by_sha256(conn, sorted(by_sha), principal.site_ids,
                                                          principal.camera_ids)
        for frame in frames:
            # The same bytes listed twice in one file: their boxes are one set.
            boxes = [b.as_dict() for image in by_sha[frame["sha256"]] for b in image.boxes]
            boxes = [{k: round(v, 6) if isinstance(v, float) else v for k, v in b.items()} for b in boxes]
            matched.add(frame["sha256"])
            labels.append({**frame, "boxes": boxes, "label": box_decision_label(boxes)})
        unmatched = [i.file_name for i in images if i.sha256 not in matched]
        annotations = sum(len(i.boxes) for i in images)
        async with self.pool.connection() as conn, conn.transaction():  # no labels without their audit row
            created = await label_imports.record_import(conn, import_id, file_sha, principal.key_id, len(images),
                                                        annotations, labels)
            await record_audit(conn, principal, "dataset.import", f"label_imports/{import_id}", details={
                "format": "coco", "file_sha256": file_sha, "images": len(images), "annotations": annotations,
                "labelled_frames": len(labels), "unmatched": len(unmatched),
                "outcome": "imported" if created else "already_imported"})
        return ImportResult(import_id, created, len(images), annotations, len(labels), unmatched[:100],
                            len(unmatched))
