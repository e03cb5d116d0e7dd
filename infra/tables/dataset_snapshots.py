"""The `dataset_snapshots` table: every snapshot built, with its manifest's key and sha256 and counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row


async def upsert(conn: DbConnection, snapshot_id: str, manifest_key: str, manifest_sha256: str,
                 counts: dict[str, Any], labels_until: datetime | None) -> None:
    """A snapshot's content never changes (its id is its content): a rebuild writes nothing new."""
    await conn.execute(
        "INSERT INTO dataset_snapshots (snapshot_id, manifest_key, manifest_sha256, counts, labels_until)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (snapshot_id) DO NOTHING",
        (snapshot_id, manifest_key, manifest_sha256, Jsonb(counts), labels_until),
    )


async def get(conn: DbConnection, snapshot_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM dataset_snapshots WHERE snapshot_id = %s", (snapshot_id,))
    return await cur.fetchone()
