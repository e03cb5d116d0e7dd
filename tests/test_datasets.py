"""Dataset snapshots: named by their content, rebuilt byte for byte, every frame's sha256 checked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from infra.store import LocalStore, put_frame, sha256_hex
from vision.camera import generate_frames
from vision.datasets import (
    CHANGED,
    MISSING,
    REVIEWED,
    BaseSetSpec,
    ReviewedFrame,
    SkippedFrame,
    SnapshotError,
    SnapshotManifest,
    SnapshotRequest,
    load_splits,
    materialize,
    reviewed_split,
)
from vision.processing import Processing

BASE = BaseSetSpec(camera_id="snap-test", seed=5, train_frames=24, calibration_frames=8, holdout_frames=8)


def _reviewed(store: LocalStore, count: int) -> list[ReviewedFrame]:
    frames = generate_frames("reviewed-line", count, seed=9)
    out = []
    for i, f in enumerate(frames):
        data = f.jpeg()
        out.append(ReviewedFrame(f"batch-x:{i:04d}", put_frame(store, data, "image/jpeg"), sha256_hex(data), f.label))
    return out


def test_the_same_inputs_rebuild_the_same_snapshot_byte_for_byte(tmp_path):
    first, second = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    reviewed = _reviewed(first, 10)
    for r in reviewed:
        second.put(r.object_key, first.get(r.object_key))
    request = SnapshotRequest(BASE, reviewed, 20)
    manifest, key, digest = materialize(first, request)
    again, key2, digest2 = materialize(second, SnapshotRequest(BASE, list(reversed(reviewed)), 20))
    assert manifest.snapshot_id == again.snapshot_id == request.snapshot_id and key == key2
    assert digest == digest2 and first.get(key) == second.get(key)  # the manifest, byte for byte
    for entry in manifest.entries:  # and every frame
        assert first.get(entry.key) == second.get(entry.key) and sha256_hex(first.get(entry.key)) == entry.sha256
    assert materialize(first, request)[2] == digest  # idempotent

    counts = manifest.counts()
    assert counts["by_source"] == {"generated": 40, "reviewed": 10}
    assert sum(counts["by_class"].values()) == 50
    held = {e.name for e in manifest.entries if e.split == "reviewed_holdout"}
    assert held == {r.frame_id for r in reviewed if reviewed_split(r.frame_id, 20) == "reviewed_holdout"}


def test_a_new_label_is_a_new_snapshot():
    reviewed = [ReviewedFrame("b:0001", "frames/sha256/aa/" + "a" * 64, "a" * 64, "ok")]
    one = SnapshotRequest(BASE, reviewed, 20).snapshot_id
    assert SnapshotRequest(BASE, reviewed, 20).snapshot_id == one
    assert SnapshotRequest(BASE, [replace(reviewed[0], label="dent")], 20).snapshot_id != one
    assert SnapshotRequest(replace(BASE, seed=6), reviewed, 20).snapshot_id != one
    assert SnapshotRequest.from_json(SnapshotRequest(BASE, reviewed, 20).to_json()).snapshot_id == one


def test_loading_checks_every_frame(tmp_path):
    store = LocalStore(tmp_path / "s")
    reviewed = _reviewed(store, 4)
    manifest, _, _ = materialize(store, SnapshotRequest(BASE, reviewed, 0))
    splits = load_splits(store, manifest, Processing(classes=BASE.classes, input_size=32))
    assert splits["train"].x.shape == (28, 32, 32, 3) and splits["train"].reviewed.sum() == 4
    assert len(splits["holdout"].y) == 8 and len(splits["calibration"].y) == 8
    victim = next(e for e in manifest.entries if e.source == REVIEWED)
    store.put(victim.key, b"\xff\xd8\xff different bytes")
    with pytest.raises(SnapshotError, match="sha256"):
        load_splits(store, manifest, Processing(classes=BASE.classes, input_size=32))
    # Training passes a list: a reviewed frame changed since is left out and reported, not fatal.
    skipped: list[SkippedFrame] = []
    splits = load_splits(store, manifest, Processing(classes=BASE.classes, input_size=32), skipped)
    assert skipped == [SkippedFrame(victim.name, CHANGED)]
    assert sum(len(s.y) for s in splits.values()) == len(manifest.entries) - 1
    store.delete(victim.key)
    with pytest.raises(SnapshotError, match="missing"):
        load_splits(store, manifest, Processing(classes=BASE.classes, input_size=32))
    skipped.clear()
    load_splits(store, manifest, Processing(classes=BASE.classes, input_size=32), skipped)
    assert skipped == [SkippedFrame(victim.name, MISSING)]
    # The generated set is ours: a change there fails the load whatever the caller passes.
    generated = next(e for e in manifest.entries if e.source != REVIEWED)
    store.put(generated.key, b"\xff\xd8\xff not the generator's")
    with pytest.raises(SnapshotError, match="sha256"):
        load_splits(store, manifest, Processing(classes=BASE.classes, input_size=32), [])


def test_a_snapshot_leaves_out_and_reports_reviewed_frames_whose_bytes_changed(tmp_path):
    """One frame's bytes changed under its name after it was labelled (an upload put again before
    uploads were write-once) must not fail every later snapshot that holds its label."""
    store = LocalStore(tmp_path / "s")
    reviewed = _reviewed(store, 4)
    store.put(reviewed[1].object_key, b"\xff\xd8\xff other bytes")
    store.delete(reviewed[2].object_key)
    manifest, _, _ = materialize(store, SnapshotRequest(BASE, reviewed, 0))
    assert {e.name for e in manifest.entries if e.source == REVIEWED} == {reviewed[0].frame_id, reviewed[3].frame_id}
    assert manifest.skipped == [SkippedFrame(reviewed[1].frame_id, CHANGED),
                                SkippedFrame(reviewed[2].frame_id, MISSING)]
    assert manifest.counts()["skipped_by_reason"] == {CHANGED: 1, MISSING: 1}
    again = SnapshotManifest.from_json(manifest.to_json())
    assert again.skipped == manifest.skipped
