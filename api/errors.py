"""What the API answers while a service it depends on is away: 503 with `Retry-After`, never a 500.

Postgres restarting (psycopg.OperationalError, which PoolTimeout is too), the object store failing a
write or a read (infra.store.StoreUnavailable) or the Temporal frontend out of reach (an RPCError
saying UNAVAILABLE or DEADLINE_EXCEEDED) is a moment, not a bug: the caller is
told to come back, in JSON for API clients and as a page that retries by itself for a browser (the
reviewer page). Nothing is lost by answering so: a batch is accepted only once its workflow has
started, and resubmitting it with the same idempotency key picks up whatever the failed attempt had
stored. Other RPC errors stay 500s, logged with their traceback as any unhandled error is.
"""

from __future__ import annotations

import html

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from temporalio.service import RPCError, RPCStatusCode

from infra.log import get_logger
from infra.store import StoreUnavailable

log = get_logger(__name__)

# Long enough for a restarted database or Temporal server to answer again; clients may retry sooner.
RETRY_AFTER_S = 5
# RPC statuses that say "the frontend did not answer", as opposed to "it answered no".
UNREACHABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})


def unavailable(request: Request, what: str, error: Exception) -> Response:
    """503 with Retry-After, saying which service is away."""
    log.warning("dependency unavailable", service=what, path=request.url.path, error=str(error).strip()[:500])
    detail = f"{what} is unavailable for the moment; retry in {RETRY_AFTER_S} s"
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    accept = request.headers.get("accept", "")
    if "text/html" in accept and "application/json" not in accept:
        page = (f'<!doctype html><meta http-equiv="refresh" content="{RETRY_AFTER_S}">'
                f"<title>Sightline: temporarily unavailable</title><p>{html.escape(detail)}. "
                "This page tries again by itself.</p>")
        return HTMLResponse(page, status_code=503, headers=headers)
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    return unavailable(request, "the database", exc)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    return unavailable(request, "the object store", exc)


async def temporal_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RPCError) and exc.status in UNREACHABLE:
        return unavailable(request, "the workflow service (Temporal)", exc)
    log.error("Temporal refused a request", path=request.url.path, exc_info=exc)
    return PlainTextResponse("Internal Server Error", status_code=500)


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_exception_handler(RPCError, temporal_error)
