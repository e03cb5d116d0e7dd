"""Dataset snapshots: the frames a model version was trained and evaluated on, named by their content.

A snapshot is the base generated set (frames of the simulated camera, drawn from a seed) plus the
frames reviewers labelled, each an object in the store under a content-addressed key. Its manifest
lists every frame's key, sha256, label, source and split, sorted and without timestamps, so the same
inputs always give the same manifest bytes and the same snapshot id, and a rebuild (in another store,
on another machine) gives the same frames byte for byte; loading checks every frame's sha256.

Splits: `train` (the classifier and the novelty statistics), `calibration` (held out: the novelty
threshold), `holdout` (held out: evaluation, and the drift reference), and for reviewed frames
`reviewed_holdout` (a fixed share of them, chosen by a hash of the frame id, never trained on).

Boxes: a reviewed frame decided with a box set (a detection review task, or a COCO import) carries it
(`boxes`, vision.boxes.Box.as_dict() without scores, [] for "no defect") in its request and its manifest
entry, so the detector retrains on reviewed boxes and vision.box_formats exports them. A frame without one
(a class decision) has no `boxes` key at all: manifests and ids of snapshots without boxes are unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from infra.db import DbConnection
from infra.store import ObjectNotFoundError, ObjectStore, put_frame, sha256_hex
from infra.tables import reviewed_frame_labels
from vision.camera import CLASSES, NORMAL, Conditions, encode_jpeg, generate_frames
from vision.decode import decode_frame
from vision.processing import Processing

GENERATED = "generated"
REVIEWED = "reviewed"
SPLITS = ("train", "calibration", "holdout", "reviewed_holdout")
MANIFEST_FORMAT = 1


class SnapshotError(RuntimeError):
    """A snapshot cannot be built or read as recorded: a frame is missing or its bytes changed."""


@dataclass(frozen=True)
class BaseSetSpec:
    """The generated part of every snapshot: the same spec always renders the same frames."""

    camera_id: str = "train-line"
    seed: int = 0
    train_frames: int = 3200
    calibration_frames: int = 2000
    holdout_frames: int = 800
    classes: tuple[str, ...] = CLASSES
    conditions: Conditions = NORMAL
    jpeg_quality: int = 90

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes), "conditions": self.conditions.as_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> BaseSetSpec:
        c = dict(d["conditions"])
        conditions = Conditions(**{**c, "tint": tuple(c.get("tint", (1.0, 1.0, 1.0)))})
        return cls(d["camera_id"], int(d["seed"]), int(d["train_frames"]), int(d["calibration_frames"]),
                   int(d["holdout_frames"]), tuple(d["classes"]), conditions, int(d.get("jpeg_quality", 90)))

    def split_sources(self) -> list[tuple[str, str, int, int, Conditions]]:
        """(split, camera id, seed, count, conditions): held-out splits use other camera ids and seeds,
        so no generated frame appears in two splits, and normal conditions."""
        return [("train", self.camera_id, self.seed, self.train_frames, self.conditions),
                ("calibration", f"{self.camera_id}-calibration", self.seed + 20_000, self.calibration_frames, NORMAL),
                ("holdout", f"{self.camera_id}-holdout", self.seed + 10_000, self.holdout_frames, NORMAL)]


@dataclass(frozen=True)
class ReviewedFrame:
    """A frame with a reviewer's final label (the `reviewed_frame_labels` view)."""

    frame_id: str
    object_key: str
    sha256: str
    label: str
    boxes: list[dict[str, Any]] | None = None  # the reviewed box set; None: a class decision


@dataclass(frozen=True)
class SnapshotEntry:
    key: str
    sha256: str
    label: str
    source: str  # generated or reviewed
    split: str
    name: str  # generated: <camera>/<index>; reviewed: the frame id
    boxes: list[dict[str, Any]] | None = None  # a reviewed box set (relative corners); None: no boxes recorded


def _without_absent_boxes(record: dict[str, Any]) -> dict[str, Any]:
    """A record's JSON form with `boxes` left out when there are none: the bytes of every manifest and
    plan without boxes stay what they were before boxes existed."""
    return {k: v for k, v in record.items() if k != "boxes" or v is not None}


@dataclass(frozen=True)
class SkippedFrame:
    """A reviewed frame a snapshot left out, and why: its bytes are gone from the store, or are not the
    bytes the reviewer labelled (the sha256 recorded when it was classified)."""

    frame_id: str
    reason: str


@dataclass
class SnapshotManifest:
    snapshot_id: str
    base: BaseSetSpec
    reviewed_holdout_pct: int
    entries: list[SnapshotEntry] = field(default_factory=list)
    skipped: list[SkippedFrame] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": MANIFEST_FORMAT,
            "snapshot_id": self.snapshot_id,
            "base": self.base.to_dict(),
            "reviewed_holdout_pct": self.reviewed_holdout_pct,
            "entries": [_without_absent_boxes(asdict(e)) for e in self.entries],
            # Only when some were: manifests without any stay byte for byte what they always were.
            **({"skipped": [asdict(f) for f in self.skipped]} if self.skipped else {}),
        }, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotManifest:
        d = json.loads(data)
        return cls(d["snapshot_id"], BaseSetSpec.from_dict(d["base"]), int(d["reviewed_holdout_pct"]),
                   [SnapshotEntry(**e) for e in d["entries"]], [SkippedFrame(**f) for f in d.get("skipped", [])])

    def counts(self) -> dict[str, dict[str, int]]:
        """Frames by class, by source and by split: what a model card reports about its data."""
        return {
            "by_class": dict(sorted(Counter(e.label for e in self.entries).items())),
            "by_source": dict(sorted(Counter(e.source for e in self.entries).items())),
            "by_split": dict(sorted(Counter(e.split for e in self.entries).items())),
            "reviewed_by_class": dict(sorted(Counter(e.label for e in self.entries if e.source == REVIEWED).items())),
            "skipped_by_reason": dict(sorted(Counter(f.reason for f in self.skipped).items())),
            # Only when some frame has boxes: the counts of snapshots without stay as they were.
            **({"boxes_by_class": dict(sorted(Counter(
                b["label"] for e in self.entries for b in e.boxes or []).items()))}
               if any(e.boxes is not None for e in self.entries) else {}),
        }


def reviewed_split(frame_id: str, holdout_pct: int) -> str:
    """A fixed share of reviewed frames is held out for evaluation, chosen by the frame id's hash, so
    a frame stays on the same side in every later snapshot."""
    bucket = int(hashlib.sha256(frame_id.encode()).hexdigest()[:8], 16) % 100
    return "reviewed_holdout" if bucket < holdout_pct else "train"


def snapshot_id(base: BaseSetSpec, reviewed: Iterable[ReviewedFrame], holdout_pct: int) -> str:
    """The id a snapshot of these inputs has: `snap-<16 hex>` of their canonical description. Known
    before anything is generated, so a retraining run can be named (and deduplicated) by it."""
    frames = sorted((r.frame_id, r.object_key, r.sha256, r.label)
                    + ((json.dumps(r.boxes, sort_keys=True),) if r.boxes is not None else ()) for r in reviewed)
    desc = {"format": MANIFEST_FORMAT, "base": base.to_dict(), "reviewed_holdout_pct": holdout_pct,
            "reviewed": frames}
    return "snap-" + hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SnapshotRequest:
    """What a snapshot is built from, decided when retraining is triggered: the base set spec and the
    reviewed frames with their labels. Saved at `datasets/<id>/plan.json`, so the run builds exactly
    the snapshot its id names, whatever reviewers label meanwhile."""

    base: BaseSetSpec
    reviewed: list[ReviewedFrame]
    holdout_pct: int

    @property
    def snapshot_id(self) -> str:
        return snapshot_id(self.base, self.reviewed, self.holdout_pct)

    def to_json(self) -> bytes:
        return json.dumps({"base": self.base.to_dict(), "holdout_pct": self.holdout_pct,
                           "reviewed": [_without_absent_boxes(asdict(r))
                                        for r in sorted(self.reviewed, key=lambda r: r.frame_id)]},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotRequest:
        d = json.loads(data)
        return cls(BaseSetSpec.from_dict(d["base"]), [ReviewedFrame(**r) for r in d["reviewed"]],
                   int(d["holdout_pct"]))


def plan_key(sid: str) -> str:
    return f"datasets/{sid}/plan.json"


async def plan_snapshot(conn: DbConnection, store: ObjectStore, base: BaseSetSpec, holdout_pct: int,
                        until: datetime) -> tuple[SnapshotRequest, str, int]:
    """The snapshot of the base set and every label reviewers decided up to `until`: its request,
    saved (idempotently) under its id, the key it is saved at, and how many reviewed frames were left
    out because their image is no longer in the store (retention) or their label is not a class."""
    rows = await reviewed_frame_labels.decided_until(conn, until)
    labelled = [ReviewedFrame(r["frame_id"], r["object_key"], r["sha256"], r["label"], r.get("boxes"))
                for r in rows if r["label"] in base.classes]

    def stored() -> list[ReviewedFrame]:
        return [r for r in labelled if store.exists(r.object_key)]

    request = SnapshotRequest(base, await asyncio.to_thread(stored), holdout_pct)
    key = plan_key(request.snapshot_id)
    if not await asyncio.to_thread(store.exists, key):
        await asyncio.to_thread(store.put, key, request.to_json(), "application/json")
    return request, key, len(rows) - len(request.reviewed)


def generate_base_frames(base: BaseSetSpec) -> list[tuple[str, str, str, bytes]]:
    """(split, label, name, JPEG bytes) of every generated frame, deterministic. Frames are stored as
    the camera sends them (JPEG), so training sees the same decoded pixels serving does."""
    out = []
    for split, camera_id, seed, count, conditions in base.split_sources():
        for frame in generate_frames(camera_id, count, seed, conditions, base.classes):
            out.append((split, frame.label, f"{camera_id}/{frame.index}", encode_jpeg(frame.image, base.jpeg_quality)))
    return out


def manifest_key(sid: str) -> str:
    return f"datasets/{sid}/manifest.json"


def _base_entries(store: ObjectStore, base: BaseSetSpec) -> list[SnapshotEntry]:
    """The generated frames, stored once per spec (content-addressed; a second snapshot reuses them)."""
    digest = hashlib.sha256(json.dumps(base.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    key = f"datasets/base-{digest}/entries.json"
    if store.exists(key):
        return [SnapshotEntry(**e) for e in json.loads(store.get(key))]
    entries = []
    for split, label, name, data in generate_base_frames(base):
        entries.append(SnapshotEntry(put_frame(store, data, "image/jpeg"), sha256_hex(data), label, GENERATED,
                                     split, name))
    store.put(key, json.dumps([asdict(e) for e in entries], sort_keys=True).encode(), "application/json")
    return entries


def materialize(store: ObjectStore, request: SnapshotRequest) -> tuple[SnapshotManifest, str, str]:
    """Build the snapshot (or find it built): (manifest, its key, its sha256). Idempotent."""
    base, reviewed, holdout_pct = request.base, request.reviewed, request.holdout_pct
    sid = request.snapshot_id
    key = manifest_key(sid)
    if store.exists(key):
        body = store.get(key)
        return SnapshotManifest.from_json(body), key, sha256_hex(body)
    entries = _base_entries(store, base)
    skipped: list[SkippedFrame] = []
    for r in sorted(reviewed, key=lambda r: r.frame_id):
        if r.label not in base.classes:
            continue  # a class this model does not have
        refusal = _reviewed_refusal(store, r.object_key, r.sha256)
        if refusal:
            # One frame changed or lost after it was labelled must not stop every later retraining.
            skipped.append(SkippedFrame(r.frame_id, refusal))
            continue
        digest = r.sha256 or sha256_hex(store.get(r.object_key))  # a name of the caller's: its bytes say
        entries.append(SnapshotEntry(r.object_key, digest, r.label, REVIEWED, reviewed_split(r.frame_id, holdout_pct),
                                     r.frame_id, r.boxes))
    manifest = SnapshotManifest(sid, base, holdout_pct, entries, skipped)
    body = manifest.to_json()
    store.put(key, body, "application/json")
    return manifest, key, sha256_hex(body)


def read_manifest(store: ObjectStore, key: str, expected_sha256: str | None = None) -> SnapshotManifest:
    body = store.get(key)
    if expected_sha256 and sha256_hex(body) != expected_sha256:
        raise SnapshotError(f"snapshot manifest {key} changed since it was built")
    return SnapshotManifest.from_json(body)


@dataclass
class SplitArrays:
    x: np.ndarray  # uint8 NHWC at the model's input size
    y: np.ndarray  # class indices
    reviewed: np.ndarray  # bool: the frame came from a reviewer


MISSING = "missing from the store"
CHANGED = "its bytes are not the ones labelled"


def _reviewed_refusal(store: ObjectStore, key: str, sha256: str) -> str | None:
    """Why a reviewed frame cannot be trained on (MISSING, CHANGED), or None."""
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        return MISSING
    return CHANGED if sha256 and sha256_hex(data) != sha256 else None


def frame_bytes(store: ObjectStore, entry: SnapshotEntry) -> bytes:
    try:
        data = store.get(entry.key)
    except ObjectNotFoundError:
        raise SnapshotError(f"frame {entry.name} of the snapshot is missing: {entry.key}") from None
    if sha256_hex(data) != entry.sha256:
        raise SnapshotError(f"frame {entry.name} at {entry.key} no longer has the sha256 the snapshot recorded")
    return data


def load_splits(store: ObjectStore, manifest: SnapshotManifest, processing: Processing,
                skipped: list[SkippedFrame] | None = None) -> dict[str, SplitArrays]:
    """Every split's frames, verified, decoded and resized as the serving preprocessor does. A reviewed
    frame whose bytes changed or went since the snapshot was built is left out and added to `skipped`
    (when given; else it fails the load like any frame); the generated set is ours and must be intact."""
    grouped: dict[str, list[tuple[SnapshotEntry, bytes]]] = {}
    for e in manifest.entries:
        try:
            data = frame_bytes(store, e)
        except SnapshotError:
            if e.source != REVIEWED or skipped is None:
                raise
            skipped.append(SkippedFrame(e.name, _reviewed_refusal(store, e.key, e.sha256) or CHANGED))
            continue
        grouped.setdefault(e.split, []).append((e, data))
    out = {}
    size = processing.input_size
    for split, loaded in grouped.items():
        x = np.empty((len(loaded), size, size, 3), np.uint8)
        for i, (_, data) in enumerate(loaded):
            x[i] = processing.resize(decode_frame(data).pixels)
        y = np.array([processing.classes.index(e.label) for e, _ in loaded], np.int64)
        out[split] = SplitArrays(x, y, np.array([e.source == REVIEWED for e, _ in loaded], bool))
    return out


def generated_splits(base: BaseSetSpec, processing: Processing) -> dict[str, SplitArrays]:
    """The base set's splits straight from the generator (no store): what `sightline model bootstrap`
    trains on. The same JPEG round trip as a stored snapshot, so the same pixels."""
    grouped: dict[str, list[tuple[str, bytes]]] = {}
    for split, label, _, data in generate_base_frames(base):
        grouped.setdefault(split, []).append((label, data))
    out = {}
    for split, frames in grouped.items():
        x = np.stack([processing.resize(decode_frame(data).pixels) for _, data in frames])
        y = np.array([processing.classes.index(label) for label, _ in frames], np.int64)
        out[split] = SplitArrays(x, y, np.zeros(len(frames), bool))
    return out
