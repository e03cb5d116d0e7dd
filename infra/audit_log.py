"""Appending to the audit log (table in migration 0003, which rejects UPDATE, DELETE and TRUNCATE).

The API appends through api.audit.record_audit with the calling key; the CLI appends here directly,
naming the operating-system user, so key and webhook administration is on the record too.
"""

from __future__ import annotations

import getpass

from psycopg.types.json import Jsonb

_INSERT = (
    "INSERT INTO audit_log (key_id, key_name, role, action, resource, workflow_id, details, request_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING audit_id"
)


async def append_audit(
    conn,
    *,
    key_id: str | None,
    key_name: str | None,
    role: str | None,
    action: str,
    resource: str,
    workflow_id: str | None = None,
    details: dict | None = None,
    request_id: str | None = None,
) -> int:
    """Append one row and return its id. `conn` is a connection or a pool."""
    params = (key_id, key_name, role, action, resource, workflow_id, Jsonb(details or {}), request_id)
    if hasattr(conn, "connection") and not hasattr(conn, "execute"):  # a pool
        async with conn.connection() as c:
            row = await (await c.execute(_INSERT, params)).fetchone()
    else:
        row = await (await conn.execute(_INSERT, params)).fetchone()
    return row["audit_id"] if isinstance(row, dict) else row[0]


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"
