"""The RetentionWorkflow's one activity: remove one bounded chunk of one kind of record that outlived its
site's period (site_retention, else the settings' default; 0 keeps it for ever), audited with its counts.

Frames are held while a registered model that is not retired was trained on them (vision.lineage), and
while a review task still shows them (the task's own period governs its image). Idempotent: what a
retried chunk removed already is simply not found again.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import activity
from temporalio.client import Client

from activities.frame_purge import delete_objects, delete_rows
from infra.db import DbConnection, DbPool
from infra.log import get_logger
from infra.settings import Settings
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables.audit_log import append_once
from vision import lineage
from workflows.deletion_types import RetentionChunkInput, RetentionChunkResult

log = get_logger(__name__)

ACTOR = "retention"


def _expired(alias: str, column: str, kind: str) -> str:
    """Rows of `alias` (joined to site_retention sr) whose `column` is past the site's period for `kind`."""
    days = f"coalesce(sr.{kind}_days, %(default)s)"
    return f"{days} > 0 AND {alias}.{column} < %(now)s::timestamptz - make_interval(days => {days})"


class RetentionActivities:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    def _default(self, kind: str) -> int:
        days: int = getattr(self.settings, f"retention_{kind}_days")
        return days

    @activity.defn
    async def expire_chunk(self, input: RetentionChunkInput) -> RetentionChunkResult:
        params = {"default": self._default(input.kind), "now": input.now, "limit": input.limit}
        if input.kind == "frames":
            counts = await self._frames(params)
        else:
            async with self.pool.connection() as conn, conn.transaction():
                if input.kind == "review_tasks":
                    counts = await self._review_tasks(conn, params)
                elif input.kind == "predictions":
                    counts = await self._predictions(conn, params)
                elif input.kind == "drift_reports":
                    counts = await self._drift_reports(conn, params)
                else:
                    raise ValueError(f"unknown retention kind {input.kind!r}")
        removed = counts.get(input.kind, 0)
        if any(counts.values()):
            async with self.pool.connection() as conn:
                await append_once(conn, action="retention.chunk", resource=f"retention/{input.kind}/{input.chunk}",
                                  workflow_id=activity.info().workflow_id or ACTOR, key_name=ACTOR, role=None,
                                  details={"kind": input.kind, "counts": counts})
            log.info("retention chunk", kind=input.kind, **counts)
        return RetentionChunkResult(input.kind, removed, counts)

    async def _review_tasks(self, conn: DbConnection, params: dict) -> dict[str, int]:
        ids = [r["review_id"] for r in await (await conn.execute(
            f"""SELECT t.review_id FROM review_tasks t LEFT JOIN site_retention sr ON sr.site_id = t.site_id
                 WHERE t.status = 'decided' AND {_expired('t', 'decided_at', 'review_tasks')}
                 ORDER BY t.decided_at LIMIT %(limit)s""", params)).fetchall()]
        if not ids:
            return {"review_tasks": 0}
        labels = (await conn.execute("DELETE FROM review_labels WHERE review_id = ANY(%s)", (ids,))).rowcount
        await conn.execute("DELETE FROM review_escalations WHERE review_id = ANY(%s)", (ids,))
        tasks = (await conn.execute("DELETE FROM review_tasks WHERE review_id = ANY(%s)", (ids,))).rowcount
        return {"review_tasks": tasks, "review_labels": labels}

    async def _predictions(self, conn: DbConnection, params: dict) -> dict[str, int]:
        counts = {}
        for table, kind in (("predictions", "predictions"), ("shadow_predictions", "shadow_predictions")):
            counts[kind] = (await conn.execute(
                f"""DELETE FROM {table} WHERE (frame_id, model_version) IN (
                        SELECT p.frame_id, p.model_version FROM {table} p
                          JOIN frames f ON f.frame_id = p.frame_id JOIN batches b ON b.batch_id = f.batch_id
                          LEFT JOIN site_retention sr ON sr.site_id = b.site_id
                         WHERE {_expired('p', 'created_at', 'predictions')} LIMIT %(limit)s)""", params)).rowcount
        return counts

    async def _frames(self, params: dict) -> dict[str, int]:
        async with self.pool.connection() as conn:
            await lineage.index_snapshots(conn, self.store)
            rows = await (await conn.execute(
                f"""SELECT f.frame_id, f.batch_id, f.sha256, f.object_key FROM frames f
                      JOIN batches b ON b.batch_id = f.batch_id
                      LEFT JOIN site_retention sr ON sr.site_id = b.site_id
                     WHERE {_expired('f', 'created_at', 'frames')}
                       AND b.status NOT IN ('received', 'running')
                       AND f.frame_id NOT IN ({lineage.HELD_FRAMES})
                       AND NOT EXISTS (SELECT 1 FROM review_tasks t WHERE t.frame_id = f.frame_id)
                     ORDER BY f.created_at LIMIT %(limit)s""", params)).fetchall()
        if not rows:
            return {"frames": 0}
        objects = await delete_objects(self.pool, self.store, rows)
        async with self.pool.connection() as conn, conn.transaction():
            counts = await delete_rows(conn, rows)
        return {**counts, "objects": objects}

    async def _drift_reports(self, conn: DbConnection, params: dict) -> dict[str, int]:
        rows = await (await conn.execute(
            f"""SELECT r.report_id, r.html_key FROM drift_reports r
                  LEFT JOIN site_retention sr ON sr.site_id = r.site_id
                 WHERE {_expired('r', 'checked_at', 'drift_reports')} ORDER BY r.checked_at LIMIT %(limit)s""",
            params)).fetchall()
        if not rows:
            return {"drift_reports": 0}

        def delete_html() -> None:
            for r in rows:
                if r["html_key"]:
                    with contextlib.suppress(ObjectNotFoundError):
                        self.store.delete(r["html_key"])

        await asyncio.to_thread(delete_html)
        n = (await conn.execute("DELETE FROM drift_reports WHERE report_id = ANY(%s)",
                                ([r["report_id"] for r in rows],))).rowcount
        return {"drift_reports": n}
