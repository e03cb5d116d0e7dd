"""Postgres through psycopg 3: a connection pool and ordered SQL migrations applied once each.

Migrations are the files in infra/migrations/ named NNNN_<what>.sql, applied in order inside one
transaction each, and recorded in schema_migrations. A transaction-scoped advisory lock serialises
concurrent runners (the API, the worker and a test may all start at once): the second waits, then
finds the work done.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

# Every connection of ours returns rows as dicts; these name the types once for every signature.
Row = dict[str, Any]
DbConnection = AsyncConnection[DictRow]
DbPool = AsyncConnectionPool[DbConnection]

_MIGRATION_LOCK = 0x5167_4C4E  # arbitrary, fixed: "SgLN"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("infra") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


def apply_migrations(url: str) -> list[str]:
    """Apply every migration not yet applied; returns the names applied by this call."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=False) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
    return applied


def open_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0,
              reconnect_timeout: float = 10.0) -> DbPool:
    """An unopened pool whose connections return rows as dicts; `await pool.open()` before use.

    It outlives a database restart by itself: every connection is checked as it leaves the pool (a
    round trip of an empty query), so one the restart broke is dropped and replaced rather than handed
    out, and a connection that breaks in use is discarded when it comes back. While the server is away,
    a caller waits at most `timeout` seconds for a connection and then gets PoolTimeout (an
    OperationalError: the API answers 503, an activity is retried). The pool retries connecting with
    exponential backoff for `reconnect_timeout` seconds; then the next caller that needs a connection
    starts it over at one second, so a server back after an outage of minutes is found within seconds."""
    return AsyncConnectionPool(
        url,
        connection_class=DbConnection,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": 5},
        check=AsyncConnectionPool.check_connection,
        timeout=timeout,
        reconnect_timeout=reconnect_timeout,
        open=False,
    )
