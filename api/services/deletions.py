"""Deletion requests (POST /v1/deletions, GET /v1/deletions/{id}) and per-site retention periods.

A request is checked before anything starts: an unknown camera, site or batch is 404, a scope that
names no frames 422, and frames a model in rollout was trained on 409 unless `force`. The request's row
and its audit record (the scope and the count, never the frames) commit together; then the
DeletionWorkflow starts under `deletion:<site>:<request id>`. The same Idempotency-Key with the same
scope finds the same request (and starts its workflow if the first attempt died before it could).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.audit import record_audit
from api.schemas.deletions import DeletionRequest, RetentionPeriods
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.store import ObjectStore
from infra.tables import deletions, site_retention
from infra.tables.api_keys import Principal
from vision import lineage
from workflows.deletion_types import (
    DELETION_WORKFLOW,
    PROGRESS_QUERY,
    DeletionInput,
    DeletionProgress,
    DeletionScope,
    deletion_workflow_id,
)


class DeletionRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def scope_of(body: DeletionRequest) -> dict[str, Any]:
    return {"site_id": body.site_id, "camera_id": body.camera_id,
            "created_from": body.created_from.isoformat() if body.created_from else None,
            "created_until": body.created_until.isoformat() if body.created_until else None,
            "batch_ids": sorted(set(body.batch_ids))}


class DeletionService:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    async def _check(self, scope: dict[str, Any], force: bool) -> tuple[int, list[Row]]:
        async with self.pool.connection() as conn:
            if scope["camera_id"] is not None:
                known = await (await conn.execute(
                    "SELECT 1 FROM batches WHERE camera_id = %s AND (%s::text IS NULL OR site_id = %s) LIMIT 1",
                    (scope["camera_id"], scope["site_id"], scope["site_id"]))).fetchone()
                if known is None:
                    where = f" at site {scope['site_id']!r}" if scope["site_id"] is not None else ""
                    raise DeletionRefused(404, f"camera_id: unknown camera {scope['camera_id']!r}{where}")
            elif scope["site_id"] is not None:
                known = await (await conn.execute("SELECT 1 FROM batches WHERE site_id = %s LIMIT 1",
                                                  (scope["site_id"],))).fetchone()
                if known is None:
                    raise DeletionRefused(404, f"site_id: unknown site {scope['site_id']!r}")
            if scope["batch_ids"]:
                found = {r["batch_id"] for r in await (await conn.execute(
                    "SELECT batch_id FROM batches WHERE batch_id = ANY(%s)", (scope["batch_ids"],))).fetchall()}
                missing = [b for b in scope["batch_ids"] if b not in found]
                if missing:
                    raise DeletionRefused(404, f"batch_ids: no batch {missing[0]!r}"
                                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            # A batch still classifying would write predictions and open review tasks for frames the
            # deletion has removed: it is refused until the batch has finished (seconds, usually).
            running = await (await conn.execute(
                f"SELECT b.batch_id FROM batches b JOIN frames f ON f.batch_id = b.batch_id"
                f" WHERE b.status IN ('received', 'running') AND {deletions.scope_condition()} LIMIT 1",
                deletions.scope_params(scope))).fetchone()
            if running is not None:
                raise DeletionRefused(409, f"batch {running['batch_id']!r} in scope is still running: "
                                           "request the deletion again once it has finished")
            frames = await deletions.count_in_scope(conn, scope)
            if frames == 0:
                raise DeletionRefused(422, "the scope names no frames (created_from/created_until: an empty range?)")
            await lineage.index_snapshots(conn, self.store)
            holding = await lineage.rollouts_holding(conn, deletions.scope_condition(), deletions.scope_params(scope))
        if holding and not force:
            named = ", ".join(f"{r['rollout_id']} ({r['frames']} frames)" for r in holding)
            raise DeletionRefused(409, f"models in rollout were trained on frames of this scope: {named}; "
                                       "send force=true to abort those rollouts and delete")
        return frames, holding

    async def request(self, body: DeletionRequest, idempotency_key: str | None,
                      caller: Principal) -> tuple[Row, bool]:
        """(the request's row, whether this call created it)."""
        key = idempotency_key or uuid.uuid4().hex
        scope = scope_of(body)
        fingerprint = hashlib.sha256(json.dumps({"scope": scope, "force": body.force}, sort_keys=True)
                                     .encode()).hexdigest()
        deletion_id = deletion_workflow_id(scope["site_id"], key)
        async with self.pool.connection() as conn:
            existing = await deletions.get(conn, deletion_id)
        if existing is not None:
            if existing["fingerprint"] != fingerprint:
                raise DeletionRefused(409, f"Idempotency-Key {key!r} names deletion {deletion_id} of another scope")
            await self._start(existing)
            return existing, False
        frames, holding = await self._check(scope, body.force)
        requested_by = f"{caller.name} ({caller.key_id})"
        async with self.pool.connection() as conn, conn.transaction():
            row = await deletions.create(conn, deletion_id=deletion_id, idempotency_key=key, fingerprint=fingerprint,
                                         scope=scope, force=body.force, reason=body.reason, requested_by=requested_by)
            # The request and its count, never the frames (the ledger names them, apart from the audit log).
            await record_audit(conn, caller, "deletion.request", f"deletions/{deletion_id}", workflow_id=deletion_id,
                               details={"scope": {**scope, "batch_ids": len(scope["batch_ids"])}, "frames": frames,
                                        "force": body.force, "reason": body.reason,
                                        "rollouts_to_abort": [r["rollout_id"] for r in holding]})
        await self._start(row)
        return row, True

    async def _start(self, row: Row) -> None:
        s = self.settings
        scope = row["scope"]
        with contextlib.suppress(WorkflowAlreadyStartedError):  # a resubmission: the first request started it
            await self.temporal.start_workflow(
                DELETION_WORKFLOW,
                DeletionInput(row["deletion_id"], DeletionScope(**scope), row["requested_by"], row["force"],
                              row["reason"], s.deletion_chunk_size, s.deletion_chunks_per_run),
                id=row["deletion_id"], task_queue=s.orchestration_task_queue)

    async def get(self, deletion_id: str) -> tuple[Row | None, DeletionProgress | None]:
        async with self.pool.connection() as conn:
            row = await deletions.get(conn, deletion_id)
        if row is None:
            return None, None
        handle = self.temporal.get_workflow_handle(deletion_id)
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                return row, await handle.query(PROGRESS_QUERY, result_type=DeletionProgress)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        return row, None


class RetentionService:
    def __init__(self, pool: DbPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    def effective(self, row: Row | None) -> dict[str, int]:
        out = {}
        for kind in site_retention.KINDS:
            override = row.get(f"{kind}_days") if row else None
            out[f"{kind}_days"] = override if override is not None else getattr(self.settings, f"retention_{kind}_days")
        return out

    async def get(self, site_id: str) -> Row | None:
        async with self.pool.connection() as conn:
            return await site_retention.get(conn, site_id)

    async def put(self, site_id: str, periods: RetentionPeriods, caller: Principal) -> Row:
        days = {kind: getattr(periods, f"{kind}_days") for kind in site_retention.KINDS}
        async with self.pool.connection() as conn, conn.transaction():
            row = await site_retention.put(conn, site_id, days, f"{caller.name} ({caller.key_id})")
            await record_audit(conn, caller, "retention.set", f"sites/{site_id}/retention", details={"days": days})
        return row
