"""Boxes in the formats other tools read: COCO JSON and YOLO text, out of a dataset snapshot and (COCO)
back in as reviewed labels.

Images are named `<sha256>.<ext>` in both exports and carry their `sha256` in COCO's image records (an
extra key COCO readers ignore). An import matches images to frames by sha256 only: the `sha256` key when
present, else a file name whose stem is 64 hex digits. File names are not unique across cameras and
tools rename files; the bytes are what a reviewer saw.

Coordinates: ours are relative corners (vision.boxes); COCO's `bbox` is [x, y, width, height] in pixels
of the image; YOLO's lines are `<class index> <x centre> <y centre> <width> <height>`, relative.
A malformed COCO file raises BoxError naming the field (`annotations[3].bbox`), for a 422.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vision.boxes import Box, BoxError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Bounds on what an import reads, before anything is matched.
MAX_IMAGES = 50_000
MAX_ANNOTATIONS = 500_000
MAX_CATEGORIES = 1_000
MAX_NAME = 256
# A box may reach past the image by this many pixels (rounding in other tools) and is clipped to it.
EDGE_SLACK_PX = 1.0


@dataclass(frozen=True)
class ExportImage:
    """One frame of a snapshot as an export lists it."""

    sha256: str
    extension: str  # jpg, png, ...
    width: int
    height: int
    boxes: Sequence[Box]
    split: str
    source: str  # generated or reviewed
    name: str  # the snapshot entry's name (generated: <camera>/<index>; reviewed: the frame id)

    @property
    def file_name(self) -> str:
        return f"{self.sha256}.{self.extension}"


def export_classes(images: Iterable[ExportImage], known: Sequence[str] = ()) -> list[str]:
    """The box classes of an export: `known` first, in its order, then any other found, sorted."""
    found = {b.label for image in images for b in image.boxes}
    return [*known, *sorted(found - set(known))]


def coco_document(images: Sequence[ExportImage], classes: Sequence[str], info: dict[str, Any]) -> dict[str, Any]:
    """A COCO detection document: category ids from 1 in `classes` order, image ids from 1."""
    category = {name: n for n, name in enumerate(classes, 1)}
    doc_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, 1):
        doc_images.append({"id": image_id, "file_name": image.file_name, "width": image.width,
                           "height": image.height, "sha256": image.sha256, "split": image.split,
                           "source": image.source, "sightline_name": image.name})
        for box in image.boxes:
            x, y = box.x0 * image.width, box.y0 * image.height
            w, h = (box.x1 - box.x0) * image.width, (box.y1 - box.y0) * image.height
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category[box.label],
                                "bbox": [round(x, 3), round(y, 3), round(w, 3), round(h, 3)],
                                "area": round(w * h, 3), "iscrowd": 0})
    return {"info": info, "licenses": [],
            "categories": [{"id": n, "name": name, "supercategory": "defect"} for name, n in category.items()],
            "images": doc_images, "annotations": annotations}


def yolo_files(images: Sequence[ExportImage], classes: Sequence[str]) -> dict[str, bytes]:
    """YOLO's layout: `labels/<split>/<sha256>.txt` per image (empty: no object) and `classes.txt`."""
    index = {name: n for n, name in enumerate(classes)}
    files = {"classes.txt": "".join(f"{name}\n" for name in classes).encode()}
    for image in images:
        lines = [f"{index[b.label]} {(b.x0 + b.x1) / 2:.6f} {(b.y0 + b.y1) / 2:.6f} {b.x1 - b.x0:.6f} "
                 f"{b.y1 - b.y0:.6f}\n" for b in image.boxes]
        files[f"labels/{image.split}/{image.sha256}.txt"] = "".join(lines).encode()
    return files


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), files[name])
    return buf.getvalue()


# ---- import ---------------------------------------------------------------------------------------

@dataclass
class CocoImage:
    """An image of an imported COCO file: its sha256 (what it is matched by) and its boxes."""

    index: int  # position in `images`, for messages
    file_name: str
    sha256: str
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)


def _list(doc: dict[str, Any], name: str, bound: int) -> list[Any]:
    value = doc.get(name)
    if not isinstance(value, list):
        raise BoxError(name, "a list is required")
    if len(value) > bound:
        raise BoxError(name, f"at most {bound} entries")
    return value


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BoxError(where, "an object is required")
    return value


def _int(obj: dict[str, Any], key: str, where: str, positive: bool = False) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise BoxError(f"{where}.{key}", "a positive integer is required" if positive else "an integer is required")
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def image_sha256(image: dict[str, Any], where: str) -> str:
    """The sha256 an image is matched by: its `sha256` key, else a file name `<64 hex>.<ext>`."""
    given = image.get("sha256")
    if given is not None:
        if not isinstance(given, str) or not _SHA256.match(given.lower()):
            raise BoxError(f"{where}.sha256", "64 hex digits are required")
        return given.lower()
    stem = str(image.get("file_name", "")).rsplit("/", 1)[-1].split(".", 1)[0].lower()
    if not _SHA256.match(stem):
        raise BoxError(f"{where}.file_name", "images are matched by sha256: name the file <sha256>.<ext> or give"
                                             " a sha256 key")
    return stem


def parse_coco(data: bytes) -> list[CocoImage]:
    """The images of a COCO detection file with their boxes (relative corners), checked: BoxError names
    the first field at fault. Crowd annotations are refused (a box set has no crowds)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; RecursionError: nesting
        raise BoxError("file", f"not JSON: {str(exc)[:200]}") from None
    doc = _obj(doc, "file")
    categories: dict[int, str] = {}
    for n, raw in enumerate(_list(doc, "categories", MAX_CATEGORIES)):
        where = f"categories[{n}]"
        cat = _obj(raw, where)
        cid = _int(cat, "id", where)
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise BoxError(f"{where}.name", "a category needs a name")
        if cid in categories:
            raise BoxError(f"{where}.id", f"category id {cid} appears twice")
        categories[cid] = name.strip()
    images: dict[int, CocoImage] = {}
    for n, raw in enumerate(_list(doc, "images", MAX_IMAGES)):
        where = f"images[{n}]"
        img = _obj(raw, where)
        iid = _int(img, "id", where)
        if iid in images:
            raise BoxError(f"{where}.id", f"image id {iid} appears twice")
        file_name = img.get("file_name")
        if not isinstance(file_name, str) or not file_name or len(file_name) > MAX_NAME:
            raise BoxError(f"{where}.file_name", "a file name is required")
        images[iid] = CocoImage(n, file_name, image_sha256(img, where), _int(img, "width", where, True),
                                _int(img, "height", where, True))
    for n, raw in enumerate(_list(doc, "annotations", MAX_ANNOTATIONS)):
        where = f"annotations[{n}]"
        ann = _obj(raw, where)
        image = images.get(_int(ann, "image_id", where))
        if image is None:
            raise BoxError(f"{where}.image_id", "no image has this id")
        label = categories.get(_int(ann, "category_id", where))
        if label is None:
            raise BoxError(f"{where}.category_id", "no category has this id")
        if ann.get("iscrowd") not in (None, 0, False):
            raise BoxError(f"{where}.iscrowd", "crowd annotations are not boxes of one defect")
        bbox = ann.get("bbox")
        values = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else None
        if values is None or None in values:
            raise BoxError(f"{where}.bbox", "[x, y, width, height] in pixels is required")
        x, y, w, h = (v for v in values if v is not None)
        if w <= 0 or h <= 0:
            raise BoxError(f"{where}.bbox", "width and height must be positive")
        if x < -EDGE_SLACK_PX or y < -EDGE_SLACK_PX or x + w > image.width + EDGE_SLACK_PX \
                or y + h > image.height + EDGE_SLACK_PX:
            raise BoxError(f"{where}.bbox", f"outside its image ({image.width}x{image.height})")
        box = Box(min(1.0, max(0.0, x / image.width)), min(1.0, max(0.0, y / image.height)),
                  min(1.0, max(0.0, (x + w) / image.width)), min(1.0, max(0.0, (y + h) / image.height)), label)
        try:
            box.check(where)
        except BoxError as exc:
            raise BoxError(f"{where}.bbox", exc.reason) from None
        image.boxes.append(box)
    return list(images.values())
