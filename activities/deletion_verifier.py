"""The deletion verifier: proves that nothing of a deletion's frames remains, by id and by sha256.

It reads the frames the deletion named from its ledger (`deletion_frames`: ids, digests, keys), then
- the store: no object under any of their keys or content addresses, no key naming a digest or id, and
  no dataset manifest or plan naming them unless its snapshot is marked with this deletion (a model's
  lineage stays readable; the frames it names are gone);
- every table of the schema (found in information_schema, so a table added later is walked too): no
  text column equal to an id, digest or key, no array containing one, no JSON document mentioning one.
A digest that another frame outside the deletion still has (the same bytes sent again by another camera)
is reported as shared, not as a leftover: those bytes are that frame's. `sightline deletions verify <id>`
prints the report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.db import DbConnection, DbPool
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables import deletions

# The ledger itself (the verifier's input) and the migration runners' bookkeeping.
SKIPPED_TABLES = {"deletion_frames", "_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock",
                  "migration_checksums", "schema_migrations"}
TEXT_TYPES = ("text", "character varying")
CHUNK = 200
# Store objects whose content may name frames: snapshot manifests and plans (JSON, small).
NAMING_PREFIXES = ("datasets/",)


@dataclass
class VerificationReport:
    deletion_id: str
    frames: int = 0
    leftovers: list[str] = field(default_factory=list)  # what remains, described without the frames' content
    shared: int = 0        # digests another frame still has
    marked: list[str] = field(default_factory=list)     # snapshot manifests that name them, marked
    checked_tables: int = 0
    checked_objects: int = 0

    @property
    def ok(self) -> bool:
        return not self.leftovers

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "frames": self.frames, "leftovers": self.leftovers[:50], "shared": self.shared,
                "marked_snapshots": self.marked, "checked_tables": self.checked_tables,
                "checked_objects": self.checked_objects}


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i:i + CHUNK] for i in range(0, len(values), CHUNK)]


async def _walk_tables(conn: DbConnection, needles: list[str], report: VerificationReport,
                       progress: Callable[[], None]) -> None:
    columns = await (await conn.execute(
        """SELECT c.table_name, c.column_name, c.data_type, c.udt_name FROM information_schema.columns c
             JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
              AND (c.data_type = ANY(%s) OR c.udt_name IN ('_text', 'jsonb', 'json'))
            ORDER BY c.table_name, c.ordinal_position""", (list(TEXT_TYPES),))).fetchall()
    tables = {c["table_name"] for c in columns} - SKIPPED_TABLES
    report.checked_tables = len(tables)
    for c in columns:
        table, column = c["table_name"], c["column_name"]
        if table in SKIPPED_TABLES:
            continue
        ident = f'"{table}"."{column}"'
        progress()
        for chunk in _chunks(needles):
            if c["udt_name"] == "_text":
                sql = f'SELECT count(*) AS n FROM "{table}" WHERE {ident} && %s::text[]'
                params: tuple[Any, ...] = (chunk,)
            elif c["udt_name"] in ("jsonb", "json"):
                sql = f'SELECT count(*) AS n FROM "{table}" WHERE {ident}::text LIKE ANY(%s)'
                params = ([f"%{v}%" for v in chunk],)
            else:
                sql = f'SELECT count(*) AS n FROM "{table}" WHERE {ident} = ANY(%s)'
                params = (chunk,)
            row = await (await conn.execute(sql, params)).fetchone()
            n = int(row["n"]) if row else 0
            if n:
                report.leftovers.append(f"table {table}.{column}: {n} row(s) name deleted frames")


async def verify_deletion(pool: DbPool, store: ObjectStore, deletion_id: str,
                          progress: Callable[[], None] = lambda: None) -> VerificationReport:
    """The report; `progress` is called as the walk goes (an activity heartbeats with it)."""
    report = VerificationReport(deletion_id)
    async with pool.connection() as conn:
        ledger = await deletions.ledger(conn, deletion_id)
        report.frames = len(ledger)
        ids = [r["frame_id"] for r in ledger]
        digests = sorted({r["sha256"] for r in ledger if r["sha256"]})
        keys = sorted({r["object_key"] for r in ledger if r["object_key"]})
        shared = await (await conn.execute(
            "SELECT DISTINCT sha256 FROM frames WHERE sha256 = ANY(%s) AND frame_id <> ALL(%s)",
            (digests, ids))).fetchall()
        shared_digests = {r["sha256"] for r in shared}
        shared_keys = {r["object_key"] for r in await (await conn.execute(
            "SELECT DISTINCT object_key FROM frames WHERE object_key = ANY(%s) AND frame_id <> ALL(%s)",
            (keys, ids))).fetchall()}
        report.shared = len(shared_digests)
        marked = {r["snapshot_id"] for r in await (await conn.execute(
            "SELECT snapshot_id FROM dataset_snapshots WHERE %s = ANY(deletions)", (deletion_id,))).fetchall()}
        own_digests = [d for d in digests if d not in shared_digests]
        own_keys = [k for k in keys if k not in shared_keys]
        await _walk_tables(conn, [*ids, *own_digests, *own_keys], report, progress)

    def walk_store() -> None:
        own = set(own_digests) | set(ids) | set(own_keys)
        for key in store.list(""):
            report.checked_objects += 1
            if key in own or key.rsplit("/", 1)[-1] in own:
                report.leftovers.append(f"store object {key} is one of the deleted frames")
                continue
            if key.startswith(NAMING_PREFIXES) and key.endswith(".json"):
                try:
                    body = store.get(key).decode(errors="replace")
                except ObjectNotFoundError:
                    continue
                if any(i in body for i in ids):
                    snapshot = key.split("/")[1] if key.count("/") >= 2 else ""
                    if snapshot in marked:
                        if snapshot not in report.marked:
                            report.marked.append(snapshot)
                    else:
                        report.leftovers.append(f"store object {key} names deleted frames and is not marked")

    await asyncio.to_thread(walk_store)
    return report
