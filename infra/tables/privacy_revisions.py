"""The `privacy_revisions` table: every change of a site's default or of one camera's privacy settings,
append-only (migration 0013). The settings in force for a camera are its own latest revision, else its
site's latest default (camera_id '')."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row

SITE_DEFAULT = ""  # the camera_id of a site's default


async def latest(conn: DbConnection, site_id: str, camera_id: str = SITE_DEFAULT) -> Row | None:
    """The latest revision of that camera's own settings (or of the site's default), or None."""
    cur = await conn.execute(
        "SELECT * FROM privacy_revisions WHERE site_id = %s AND camera_id = %s ORDER BY revision DESC LIMIT 1",
        (site_id, camera_id))
    return await cur.fetchone()


async def in_force(conn: DbConnection, site_id: str, camera_id: str) -> Row | None:
    """The revision that applies to the camera: its own latest, else the site's latest default."""
    cur = await conn.execute(
        """
        SELECT * FROM privacy_revisions
         WHERE site_id = %s AND camera_id IN (%s, '')
         ORDER BY camera_id = '', revision DESC
         LIMIT 1
        """, (site_id, camera_id))
    return await cur.fetchone()


async def get(conn: DbConnection, revision: int) -> Row | None:
    cur = await conn.execute("SELECT * FROM privacy_revisions WHERE revision = %s", (revision,))
    return await cur.fetchone()


async def append(conn: DbConnection, *, site_id: str, camera_id: str, faces: bool, regions: list[dict[str, Any]],
                 changed_by: str, reason: str) -> tuple[Row, bool]:
    """A new revision with these settings, unless the latest one already says exactly this (a retried
    PUT): (the revision in force for that camera or site, whether it is new). The latest row is locked
    first so two changes at once make two revisions in order, never lose one."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('privacy:' || %s || ':' || %s))", (site_id, camera_id))
    current = await latest(conn, site_id, camera_id)
    if current is not None and current["faces"] == faces and current["regions"] == regions:
        return current, False
    cur = await conn.execute(
        """
        INSERT INTO privacy_revisions (site_id, camera_id, faces, regions, changed_by, reason)
        VALUES (%s, %s, %s, %s, %s, %s) RETURNING *
        """, (site_id, camera_id, faces, Jsonb(regions), changed_by, reason))
    row = await cur.fetchone()
    assert row is not None
    return row, True
