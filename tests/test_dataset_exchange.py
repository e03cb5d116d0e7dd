"""COCO / YOLO exchange against the real API, Postgres and store: COCO boxes imported as reviewed labels
(matched by sha256, idempotent, audited, scoped), a snapshot built from them exported as COCO and YOLO,
the COCO export imported again with the same boxes, and malformed files answered 422 naming the field."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime

import pytest
from pycocotools.coco import COCO

from cli.dataset import write_export
from infra.store import put_frame, sha256_hex
from infra.tables import dataset_snapshots
from infra.tables.api_keys import create_key
from tests.frames import jpeg_frame
from tests.review_support import fetch_all, fetch_one, insert_batch
from vision.box_formats import parse_coco
from vision.boxes import BoxError
from vision.datasets import BaseSetSpec, materialize, plan_snapshot

TINY = BaseSetSpec(camera_id="exchange", seed=3, train_frames=3, calibration_frames=1, holdout_frames=1)


async def stored_frames(api, count: int = 2) -> tuple[str, list[tuple[str, str, bytes]]]:
    """A batch at plant-a with `count` accepted frames (120 x 120 JPEG): (batch id, [(frame id, sha256, bytes)])."""
    batch = f"batch-exch-{uuid.uuid4().hex[:8]}"
    await insert_batch(api.pool, batch)
    out = []
    for position in range(count):
        data = jpeg_frame(70 + position + hash(batch) % 1000, size=120)
        key = await asyncio.to_thread(put_frame, api.store, data, "image/jpeg")
        frame_id = f"{batch}:{position:04d}"
        async with api.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, size_bytes, status, width,"
                " height, image_format) VALUES (%s, %s, %s, %s, %s, %s, 'accepted', 120, 120, 'jpeg')",
                (frame_id, batch, position, key, sha256_hex(data), len(data)))
        out.append((frame_id, sha256_hex(data), data))
    return batch, out


def coco_file(frames, *, extra_image: bool = True) -> dict:
    images = [{"id": n + 1, "file_name": f"{sha}.jpg", "width": 120, "height": 120}
              for n, (_, sha, _) in enumerate(frames)]
    if extra_image:  # a picture from elsewhere: matches no frame, reported, not stored
        images.append({"id": 99, "file_name": "elsewhere.jpg", "sha256": "ab" * 32, "width": 120, "height": 120})
    return {"images": images, "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [12, 24, 36, 18]},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 60, 30, 30]},
                {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 120, 60]},
            ]}


def boxes_by_sha(doc: dict) -> dict[str, list[tuple]]:
    return {i.sha256: sorted((b.label, round(b.x0, 4), round(b.y0, 4), round(b.x1, 4), round(b.y1, 4))
                             for b in i.boxes) for i in parse_coco(json.dumps(doc).encode())}


async def test_coco_import_export_round_trip(api):
    headers = api.auth("ml-engineer")
    _, frames = await stored_frames(api)
    original = coco_file(frames)
    first = await api.http.post("/v1/datasets/import", content=json.dumps(original), headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["images"], body["annotations"], body["labelled_frames"]) == (True, 3, 3, 2)
    assert body["unmatched"] == ["elsewhere.jpg"] and body["unmatched_count"] == 1
    again = await api.http.post("/v1/datasets/import", content=json.dumps(original), headers=headers)
    assert again.json()["created"] is False and again.json()["import_id"] == body["import_id"]  # idempotent
    rows = await fetch_all(api.pool, "SELECT frame_id, label FROM imported_labels WHERE import_id = %s ORDER BY 1",
                           body["import_id"])
    assert [(r["frame_id"], r["label"]) for r in rows] == [(frames[0][0], "dent"), (frames[1][0], "dent")]
    audit = await fetch_all(api.pool, "SELECT details->>'outcome' AS outcome FROM audit_log WHERE action ="
                            " 'dataset.import' AND resource = %s ORDER BY audit_id",
                            f"label_imports/{body['import_id']}")
    assert [a["outcome"] for a in audit] == ["imported", "already_imported"]
    view = await fetch_one(api.pool, "SELECT label, boxes, source FROM reviewed_frame_labels WHERE frame_id = %s",
                           frames[1][0])
    assert view is not None and view["source"] == "import" and view["boxes"] == [
        {"x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 0.5, "label": "dent"}]

    # A snapshot takes the imported boxes; its COCO export gives them back.
    async with api.pool.connection() as conn:
        request, _, _ = await plan_snapshot(conn, api.store, TINY, 0, datetime.now(UTC))
    manifest, key, digest = await asyncio.to_thread(materialize, api.store, request)
    reviewed = {e.name: e for e in manifest.entries if e.source == "reviewed"}
    assert len(reviewed[frames[0][0]].boxes or []) == 2
    assert manifest.counts()["boxes_by_class"]["dent"] >= 2
    async with api.pool.connection() as conn:
        await dataset_snapshots.upsert(conn, manifest.snapshot_id, key, digest, manifest.counts(), None)
    exported = await api.http.get(f"/v1/datasets/{manifest.snapshot_id}/export", params={"format": "coco"},
                                  headers=headers)
    assert exported.status_code == 200, exported.text
    doc = exported.json()
    assert boxes_by_sha(doc)[frames[0][1]] == boxes_by_sha(original)[frames[0][1]]
    assert boxes_by_sha(doc)[frames[1][1]] == boxes_by_sha(original)[frames[1][1]]
    assert [c["name"] for c in doc["categories"]][:3] == ["scratch", "dent", "stain"]
    coco = COCO()  # pycocotools, as other tools read it
    coco.dataset = doc
    coco.createIndex()
    assert len(coco.getImgIds()) == len(doc["images"]) and len(coco.getAnnIds()) == len(doc["annotations"])

    # Imported again (another file: a new import), the frames keep the same boxes.
    back = await api.http.post("/v1/datasets/import", content=exported.content, headers=headers)
    assert back.status_code == 200 and back.json()["created"] is True
    assert back.json()["labelled_frames"] == len(doc["images"])
    relabelled = await fetch_one(api.pool, "SELECT boxes FROM imported_labels WHERE import_id = %s AND frame_id = %s",
                                 back.json()["import_id"], frames[1][0])
    assert relabelled is not None and relabelled["boxes"] == view["boxes"]

    # YOLO: classes.txt and a label file per image, relative centres and sizes.
    yolo = await api.http.get(f"/v1/datasets/{manifest.snapshot_id}/export", params={"format": "yolo"},
                              headers=headers)
    assert yolo.status_code == 200 and yolo.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(yolo.content)) as archive:
        classes = archive.read("classes.txt").decode().split()
        label = archive.read(f"labels/{reviewed[frames[1][0]].split}/{frames[1][1]}.txt").decode()
    assert classes[:3] == ["scratch", "dent", "stain"]
    assert label == f"{classes.index('dent')} 0.500000 0.250000 1.000000 0.500000\n"

    # With the generated set: its drawn boxes (a defect frame has one, an "ok" frame none).
    with_generated = (await api.http.get(f"/v1/datasets/{manifest.snapshot_id}/export",
                                         params={"generated": "true"}, headers=headers)).json()
    generated = [i for i in with_generated["images"] if i["source"] == "generated"]
    assert len(generated) == 5
    per_image = {i["id"]: 0 for i in generated}
    for a in with_generated["annotations"]:
        if a["image_id"] in per_image:
            per_image[a["image_id"]] += 1
    assert all(n <= 1 for n in per_image.values())

    # A key of another site exports none of these reviewed frames and labels none of them.
    async with api.pool.connection() as conn:
        other = await create_key(conn, "site-b engineer", "ml-engineer", site_ids=["plant-b"])
    scoped = {"Authorization": f"Bearer {other.raw_key}"}
    mine = await api.http.get(f"/v1/datasets/{manifest.snapshot_id}/export", headers=scoped)
    assert {i["sha256"] for i in mine.json()["images"]}.isdisjoint({frames[0][1], frames[1][1]})
    theirs = await api.http.post("/v1/datasets/import", content=json.dumps(original), headers=scoped)
    assert theirs.json()["labelled_frames"] == 0 and theirs.json()["import_id"] != body["import_id"]
    missing = await api.http.get("/v1/datasets/snap-nope/export", headers=headers)
    assert missing.status_code == 404


def _cli(*args: str):
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, ["dataset", *args], env={"COLUMNS": "200"})


async def test_the_cli_exports_and_imports(api, tmp_path, monkeypatch):
    from infra.settings import get_settings

    _, frames = await stored_frames(api, count=1)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({**coco_file(frames, extra_image=False), "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [12, 24, 36, 18]}]}))
    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", api.settings.database_url)
    monkeypatch.setenv("SIGHTLINE_OBJECT_STORE_URL", api.settings.resolved_object_store_url)
    get_settings.cache_clear()
    try:
        imported = await asyncio.to_thread(_cli, "import", str(labels))  # the command runs its own event loop
        assert imported.exit_code == 0, imported.output
        assert "imported coco-" in imported.output and "1 frames labelled" in imported.output
        again = await asyncio.to_thread(_cli, "import", str(labels))
        assert again.exit_code == 0 and "already imported" in again.output
        async with api.pool.connection() as conn:
            request, _, _ = await plan_snapshot(conn, api.store, TINY, 0, datetime.now(UTC))
        manifest, key, digest = await asyncio.to_thread(materialize, api.store, request)
        async with api.pool.connection() as conn:
            await dataset_snapshots.upsert(conn, manifest.snapshot_id, key, digest, manifest.counts(), None)
        out = tmp_path / "yolo"
        exported = await asyncio.to_thread(_cli, "export", manifest.snapshot_id, "--format", "yolo", "--out", str(out))
        assert exported.exit_code == 0, exported.output
        assert (out / "classes.txt").read_text().split()[:3] == ["scratch", "dent", "stain"]
        (label_file,) = out.glob(f"labels/*/{frames[0][1]}.txt")
        assert label_file.read_text() == "0 0.250000 0.275000 0.300000 0.150000\n"  # scratch, relative centre and size
        coco_out = tmp_path / "snap.json"
        assert (await asyncio.to_thread(_cli, "export", manifest.snapshot_id, "--out", str(coco_out))).exit_code == 0
        assert frames[0][1] in {i["sha256"] for i in json.loads(coco_out.read_text())["images"]}
        assert (await asyncio.to_thread(_cli, "export", "snap-nope")).exit_code == 1
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(MALFORMED[0][0]))
        refused = await asyncio.to_thread(_cli, "import", str(bad))
        assert refused.exit_code == 2 and "annotations[3].bbox" in refused.output
    finally:
        get_settings.cache_clear()


def test_cli_writes_yolo_as_a_directory(tmp_path):
    from vision.box_formats import ExportImage, yolo_files, zip_of
    from vision.boxes import Box

    image = ExportImage("cd" * 32, "jpg", 100, 50, [Box(0.1, 0.2, 0.3, 0.6, "dent")], "train", "reviewed", "f")
    written = write_export(zip_of(yolo_files([image], ["scratch", "dent"])), "yolo", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "classes.txt", f"labels/train/{'cd' * 32}.txt"]
    assert (tmp_path / "out" / "labels" / "train" / f"{'cd' * 32}.txt").read_text() == \
        "1 0.200000 0.400000 0.200000 0.400000\n"


GOOD_IMAGE = {"id": 1, "file_name": "ab" * 32 + ".jpg", "width": 100, "height": 100}
GOOD_ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}


def _doc(**changes) -> dict:
    doc = {"images": [GOOD_IMAGE], "categories": [{"id": 1, "name": "dent"}],
           "annotations": [GOOD_ANN, {**GOOD_ANN, "id": 2}, {**GOOD_ANN, "id": 3}, {**GOOD_ANN, "id": 4}]}
    doc.update(changes)
    return doc


MALFORMED = [
    (_doc(annotations=[GOOD_ANN, GOOD_ANN, GOOD_ANN, {**GOOD_ANN, "bbox": [90, 10, 20, 20]}]), "annotations[3].bbox"),
    (_doc(annotations=[{**GOOD_ANN, "bbox": [10, 10, 20]}]), "annotations[0].bbox"),
    (_doc(annotations=[{**GOOD_ANN, "bbox": [10, 10, 0, 5]}]), "annotations[0].bbox"),
    (_doc(annotations=[{**GOOD_ANN, "bbox": [10, "x", 5, 5]}]), "annotations[0].bbox"),
    (_doc(annotations=[{**GOOD_ANN, "category_id": 7}]), "annotations[0].category_id"),
    (_doc(annotations=[{**GOOD_ANN, "image_id": 7}]), "annotations[0].image_id"),
    (_doc(categories=[{"id": 1, "name": " "}]), "categories[0].name"),
    (_doc(images=[{**GOOD_IMAGE, "file_name": "photo.jpg"}]), "images[0].file_name"),
    (_doc(images=[{**GOOD_IMAGE, "width": 0}]), "images[0].width"),
    ({"images": [], "annotations": []}, "categories"),
]


@pytest.mark.parametrize(("doc", "field"), MALFORMED, ids=[f for _, f in MALFORMED])
def test_a_malformed_coco_file_names_the_field(doc, field):
    with pytest.raises(BoxError) as refused:
        parse_coco(json.dumps(doc).encode())
    assert refused.value.field == field


async def test_the_api_answers_422_naming_the_field_and_writes_nothing(api):
    headers = api.auth("ml-engineer")
    before = await fetch_one(api.pool, "SELECT count(*) AS n FROM label_imports")
    for doc, field in MALFORMED[:2]:
        answer = await api.http.post("/v1/datasets/import", content=json.dumps(doc), headers=headers)
        assert answer.status_code == 422 and answer.json()["detail"]["field"] == field, answer.text
    answer = await api.http.post("/v1/datasets/import", content=b"{not json", headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"]["field"] == "file"
    after = await fetch_one(api.pool, "SELECT count(*) AS n FROM label_imports")
    assert before == after
