"""What the API answers when Postgres or Temporal is out of reach (api/errors.py): 503 with Retry-After,
as JSON for API clients and as a page that retries by itself for a browser; other Temporal errors
remain 500s. The fault suite (test_kills.py) sees the same answers from the real services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg_pool import PoolTimeout
from temporalio.service import RPCError, RPCStatusCode

from api.errors import RETRY_AFTER_S, register_error_handlers

RAISED = {
    "closed": psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    "pool": PoolTimeout("couldn't get a connection after 10.00 sec"),
    "unavailable": RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b""),
    "deadline": RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b""),
    "invalid": RPCError("bad request", RPCStatusCode.INVALID_ARGUMENT, b""),
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    register_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        raise RAISED[name]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://t") as client:
        yield client


@pytest.mark.parametrize(("name", "service"), [("closed", "database"), ("pool", "database"),
                                               ("unavailable", "Temporal"), ("deadline", "Temporal")])
async def test_an_unreachable_service_is_a_503_with_retry_after(http, name, service) -> None:
    response = await http.get(f"/raise/{name}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert service in response.json()["detail"]


async def test_a_browser_gets_a_page_that_retries_by_itself(http) -> None:
    response = await http.get("/raise/pool", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 503 and response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert f'http-equiv="refresh" content="{RETRY_AFTER_S}"' in response.text


async def test_temporal_saying_no_is_still_a_500(http) -> None:
    response = await http.get("/raise/invalid")
    assert response.status_code == 500
    assert "retry-after" not in response.headers
