"""Appending to the audit log (table in migration 0003, which rejects UPDATE, DELETE and TRUNCATE).

The API appends through api.audit.record_audit with the calling key; the CLI appends here directly,
naming the operating-system user, so key and webhook administration is on the record too.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection

_INSERT = (
    "INSERT INTO audit_log (key_id, key_name, role, action, resource, workflow_id, details, request_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING audit_id"
)


async def append_audit(
    conn: DbConnection,
    *,
    key_id: str | None,
    key_name: str | None,
    role: str | None,
    action: str,
    resource: str,
    workflow_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> int:
    """Append one row and return its id. Pass the connection whose transaction made the change, so
    the change and its record commit together."""
    params = (key_id, key_name, role, action, resource, workflow_id, Jsonb(dict(details or {})), request_id)
    row = await (await conn.execute(_INSERT, params)).fetchone()
    assert row is not None  # RETURNING always returns the row
    audit_id: int = row["audit_id"]
    return audit_id


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


async def append_once(conn: DbConnection, *, action: str, resource: str, workflow_id: str, key_name: str,
                      role: str | None, details: Mapping[str, Any] | None = None) -> None:
    """Append a row a workflow's activity writes, unless that workflow already wrote it for that resource
    (a retried activity): one row per change. Serialised per (workflow, action) by an advisory lock."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"audit:{workflow_id}:{action}:{resource}",))
    found = await (await conn.execute(
        "SELECT 1 FROM audit_log WHERE workflow_id = %s AND action = %s AND resource = %s LIMIT 1",
        (workflow_id, action, resource))).fetchone()
    if found is None:
        await append_audit(conn, key_id=None, key_name=key_name, role=role, action=action, resource=resource,
                           workflow_id=workflow_id, details=details)
