"""The `label_imports` and `imported_labels` tables (migration 0018): COCO files imported as reviewed
labels, and the box set each gave a frame. The reviewed_frame_labels view takes them beside reviewers'
decisions. Keyed by the import's id (its file's sha256 and the key's scope) and the frame, so posting the
same file again writes nothing. Also the frame lookups an import and an export need (frames by sha256,
frames' sites and sizes), which join `frames` to `batches`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row


async def frames_by_sha256(conn: DbConnection, digests: Sequence[str], allowed_sites: Sequence[str] = (),
                           allowed_cameras: Sequence[str] = ()) -> list[Row]:
    """Accepted frames whose bytes have one of these sha256s, within a key's scope (empty: any):
    (frame_id, batch_id, object_key, sha256, camera_id, site_id), by frame id."""
    cur = await conn.execute(
        "SELECT f.frame_id, f.batch_id, f.object_key, f.sha256, b.camera_id, b.site_id"
        "  FROM frames f JOIN batches b ON b.batch_id = f.batch_id"
        " WHERE f.sha256 = ANY (%(digests)s) AND f.status = 'accepted'"
        "   AND (cardinality(%(sites)s::text[]) = 0 OR b.site_id = ANY (%(sites)s))"
        "   AND (cardinality(%(cameras)s::text[]) = 0 OR b.camera_id = ANY (%(cameras)s))"
        " ORDER BY f.frame_id",
        {"digests": list(digests), "sites": list(allowed_sites), "cameras": list(allowed_cameras)})
    return await cur.fetchall()


async def frames_by_id(conn: DbConnection, frame_ids: Sequence[str]) -> dict[str, Row]:
    """frame_id -> (camera_id, site_id, width, height, image_format) of the frames that exist."""
    cur = await conn.execute(
        "SELECT f.frame_id, b.camera_id, b.site_id, f.width, f.height, f.image_format"
        "  FROM frames f JOIN batches b ON b.batch_id = f.batch_id WHERE f.frame_id = ANY (%s)",
        (list(frame_ids),))
    return {r["frame_id"]: r for r in await cur.fetchall()}


async def record_import(conn: DbConnection, import_id: str, file_sha256: str, imported_by: str, images: int,
                        annotations: int, labels: Sequence[Mapping[str, Any]]) -> bool:
    """The import and its labels (frame_id, batch_id, object_key, camera_id, site_id, label, boxes);
    False when this import was recorded before (nothing is written again)."""
    cur = await conn.execute(
        "INSERT INTO label_imports (import_id, file_sha256, imported_by, images, annotations, matched)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (import_id) DO NOTHING",
        (import_id, file_sha256, imported_by, images, annotations, len(labels)))
    if cur.rowcount == 0:
        return False
    for label in labels:
        await conn.execute(
            "INSERT INTO imported_labels (import_id, frame_id, batch_id, object_key, camera_id, site_id, label,"
            " boxes, imported_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())"
            " ON CONFLICT (import_id, frame_id) DO NOTHING",
            (import_id, label["frame_id"], label["batch_id"], label["object_key"], label["camera_id"],
             label["site_id"], label["label"], Jsonb(list(label["boxes"]))))
    return True


async def get(conn: DbConnection, import_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM label_imports WHERE import_id = %s", (import_id,))
    return await cur.fetchone()
