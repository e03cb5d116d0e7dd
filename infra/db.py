"""Postgres through psycopg 3: a connection pool whose connections return rows as dicts. The schema is
the SQL migrations in infra/migrations/, applied by infra.schema_migrations."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

# Every connection of ours returns rows as dicts; these name the types once for every signature.
Row = dict[str, Any]
DbConnection = AsyncConnection[DictRow]
DbPool = AsyncConnectionPool[DbConnection]


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
