"""Reviewer page sessions on the real app: server-side (random id in the cookie, stored hashed), with a
Secure flag over HTTPS, accepted only by the page and the image it shows, revoked by sign-out or by
revoking the key, the page's memory (skip list, scope) kept server-side, and CSRF tokens checked, a
non-ASCII one answered 400."""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.requests import Request

from api.auth import SESSION_COOKIE, cookie_secure
from infra.tables import sessions
from infra.tables.api_keys import create_key, revoke_key
from tests.review_support import fetch_all, fetch_one


@asynccontextmanager
async def browser(api, scheme: str = "http"):
    """A client with no API key header: only what the page gives it (cookies)."""
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://sightline.test") as client:
        yield client


def _form_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, raw_key: str) -> httpx.Response:
    form = await client.get("/review/sign-in")
    return await client.post("/review/sign-in", data={"api_key": raw_key, "csrf": _form_token(form)})


def _set_cookie(response: httpx.Response, name: str) -> str:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert headers, response.headers
    return headers[0]


async def new_reviewer(api, name: str = "session reviewer"):
    async with api.pool.connection() as conn:
        return await create_key(conn, f"{name} {uuid.uuid4().hex[:6]}", "reviewer")


async def test_sign_in_opens_a_server_side_session(api):
    key = await new_reviewer(api)
    async with browser(api) as client:
        signed_in = await sign_in(client, key.raw_key)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/review"
        cookie = _set_cookie(signed_in, SESSION_COOKIE)
        raw = client.cookies[SESSION_COOKIE]
        attributes = cookie.lower()
        assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
        assert "secure" not in attributes, "plain HTTP (the local stack): no Secure flag"
        assert key.raw_key not in cookie and len(raw) < 64, "the cookie holds a random id, never the key"
        assert (await client.get("/review")).status_code == 200
    row = await fetch_one(api.pool, "SELECT * FROM review_sessions WHERE session_hash = %s",
                          sessions.hash_session_id(raw))
    assert row is not None and row["key_id"] == key.key_id and row["revoked_at"] is None
    assert all(raw not in str(value) for value in row.values()), "only the id's hash is stored"
    assert (row["expires_at"] - row["created_at"]).total_seconds() == pytest.approx(12 * 3600, abs=5)
    audit = await fetch_all(api.pool, "SELECT action FROM audit_log WHERE key_id = %s", key.key_id)
    assert [a["action"] for a in audit] == ["review.sign_in"]


async def test_the_cookie_is_secure_over_https(api):
    key = await new_reviewer(api)
    async with browser(api, "https") as client:
        assert "secure" in _set_cookie(await sign_in(client, key.raw_key), SESSION_COOKIE).lower()


@pytest.mark.settings(session_cookie_secure=False, review_session_max_age_s=600)
async def test_the_secure_flag_and_the_lifetime_are_settings(api):
    key = await new_reviewer(api)
    async with browser(api, "https") as client:
        cookie = _set_cookie(await sign_in(client, key.raw_key), SESSION_COOKIE).lower()
    assert "secure" not in cookie and "max-age=600" in cookie
    # Forced on: behind a TLS proxy that does not forward the scheme, the app sees plain HTTP.
    request = Request({"type": "http", "scheme": "http", "path": "/", "headers": [], "server": ("x", 80)})
    assert cookie_secure(request, api.settings.model_copy(update={"session_cookie_secure": True}))
    assert not cookie_secure(request, api.settings.model_copy(update={"session_cookie_secure": None}))


async def test_the_session_cookie_is_no_key_for_the_api(api):
    """A signed-in admin's browser cannot be made to call the API from another site: only the page and
    the review image take the cookie."""
    async with api.pool.connection() as conn:
        admin = await create_key(conn, f"page admin {uuid.uuid4().hex[:6]}", "admin")
    async with browser(api) as client:
        await sign_in(client, admin.raw_key)
        for method, path in (("GET", "/v1/reviews"), ("POST", "/v1/batches"), ("GET", "/v1/batches"),
                             ("POST", "/v1/reviews/next"), ("POST", "/v1/reviews/x/claim"), ("GET", "/metrics")):
            response = await client.request(method, path)
            assert response.status_code == 401, (method, path, response.status_code)
        # The image the page shows: authorised by the cookie (404: no such task, but not 401).
        assert (await client.get("/v1/reviews/review-nope-qa_sample/frame")).status_code == 404
    async with browser(api) as anonymous:
        assert (await anonymous.get("/v1/reviews/review-nope-qa_sample/frame")).status_code == 401


async def test_sign_out_revokes_the_session_wherever_its_cookie_is(api):
    key = await new_reviewer(api)
    async with browser(api) as client:
        await sign_in(client, key.raw_key)
        raw = client.cookies[SESSION_COOKIE]
        page = await client.get("/review")
        out = await client.post("/review/sign-out", data={"csrf": _form_token(page)})
        assert out.status_code == 303 and out.headers["location"] == "/review/sign-in"
        assert SESSION_COOKIE in out.headers["set-cookie"]  # cleared in this browser
    async with browser(api) as stolen:  # a copy of the cookie taken before sign-out
        stolen.cookies.set(SESSION_COOKIE, raw)
        assert (await stolen.get("/review")).headers["location"] == "/review/sign-in"
        assert (await stolen.get("/v1/reviews/review-nope-qa_sample/frame")).status_code == 401
    row = await fetch_one(api.pool, "SELECT revoked_at FROM review_sessions WHERE session_hash = %s",
                          sessions.hash_session_id(raw))
    assert row is not None and row["revoked_at"] is not None
    audit = await fetch_all(api.pool, "SELECT action FROM audit_log WHERE key_id = %s ORDER BY audit_id", key.key_id)
    assert [a["action"] for a in audit] == ["review.sign_in", "review.sign_out"]


async def test_revoking_the_key_ends_its_sessions(api):
    key = await new_reviewer(api)
    async with browser(api) as client:
        await sign_in(client, key.raw_key)
        assert (await client.get("/review")).status_code == 200
        async with api.pool.connection() as conn:
            await revoke_key(conn, key.key_id)
        assert (await client.get("/review")).headers["location"] == "/review/sign-in"


async def test_forms_need_their_csrf_token_and_a_non_ascii_one_is_a_bad_request(api):
    key = await new_reviewer(api)
    async with browser(api) as client:
        form = await client.get("/review/sign-in")
        token = _form_token(form)
        # Sign-in: the token must match the cookie the form came with (no login CSRF).
        async with browser(api) as elsewhere:
            forged = await elsewhere.post("/review/sign-in", data={"api_key": key.raw_key, "csrf": token})
            assert forged.status_code == 401 and "expired" in forged.text
            assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")
        bad = await client.post("/review/sign-in", data={"api_key": key.raw_key, "csrf": "jeton-é"})
        assert bad.status_code == 400
        assert (await client.post("/review/sign-in", data={"api_key": key.raw_key, "csrf": token})).status_code == 303

        for path, data in (("/review/next", {}), ("/review/decision", {"review_id": "x", "label": "ok"}),
                           ("/review/sign-out", {})):
            assert (await client.post(path, data={**data, "csrf": "🙂"})).status_code == 400, path
            stale = await client.post(path, data={**data, "csrf": "stale-token"})
            assert stale.status_code == 303 and stale.headers["location"] == "/review", path
        page = await client.get("/review")
        assert "The form expired" in page.text and (await client.get("/review")).status_code == 200


async def test_the_page_memory_stays_server_side(api):
    """The skip list and the queue scope live in the session row; the cookie never changes or grows."""
    key = await new_reviewer(api)
    async with browser(api) as client:
        await sign_in(client, key.raw_key)
        raw = client.cookies[SESSION_COOKIE]
        page = await client.get("/review", params={"batch_id": f"batch-none-{uuid.uuid4().hex[:6]}"})
        for _ in range(3):
            response = await client.post("/review/next", data={"csrf": _form_token(page)})
            assert response.status_code == 303 and "set-cookie" not in response.headers
        page = await client.get("/review")
        assert "queue is empty" in page.text
        assert client.cookies[SESSION_COOKIE] == raw
    async with api.pool.connection() as conn:
        session = await sessions.live(conn, raw)
    assert session is not None and session.state["scope"]["batch_id"].startswith("batch-none-")
