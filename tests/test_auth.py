"""API keys, roles and the append-only audit log, against the real Postgres of the test session."""

from __future__ import annotations

import uuid
from typing import Annotated

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from typer.testing import CliRunner

from api.audit import record_audit
from api.auth import ROLES, SESSION_COOKIE, Principal, require_roles, require_roles_or_session, require_scope
from api.request_ids import RequestIdMiddleware
from infra.tables import sessions
from infra.tables.api_keys import active_principal, authenticate_key, create_key, hash_key, list_keys, revoke_key


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_key_is_random_and_stored_only_as_hash(db_pool):
    async with db_pool.connection() as conn:
        a = await create_key(conn, _name(), "ingest")
        b = await create_key(conn, _name(), "ingest")
        assert a.raw_key != b.raw_key and a.key_id != b.key_id
        assert a.raw_key.startswith(f"sl_{a.key_id}_") and len(a.raw_key) > 40
        row = await (await conn.execute("SELECT * FROM api_keys WHERE key_id = %s", (a.key_id,))).fetchone()
    assert row["key_hash"] == hash_key(a.raw_key) != a.raw_key
    assert all(a.raw_key not in str(v) for v in row.values()), "the raw key must not be stored anywhere"
    assert hash_key(a.raw_key) == hash_key(a.raw_key) and len(hash_key(a.raw_key)) == 64


async def test_create_authenticate_list_revoke(db_pool):
    async with db_pool.connection() as conn:
        created = await create_key(conn, _name(), "reviewer")
        principal = await authenticate_key(conn, created.raw_key)
        assert principal == Principal(created.key_id, created.name, "reviewer")
        # A used key shows when it was last used.
        info = {k.key_id: k for k in await list_keys(conn)}[created.key_id]
        assert info.last_used_at is not None and info.revoked_at is None

        for wrong in ["", "nonsense", created.raw_key[:-1], created.raw_key + "x", f"sl_{created.key_id}_guess"]:
            assert await authenticate_key(conn, wrong) is None

        assert await revoke_key(conn, created.key_id) is True
        assert await revoke_key(conn, created.key_id) is False
        assert await authenticate_key(conn, created.raw_key) is None
        assert created.key_id not in {k.key_id for k in await list_keys(conn, include_revoked=False)}
        assert {k.key_id: k for k in await list_keys(conn)}[created.key_id].revoked_at is not None


async def test_create_rejects_unknown_role_and_empty_name(db_pool):
    async with db_pool.connection() as conn:
        with pytest.raises(ValueError, match="unknown role"):
            await create_key(conn, _name(), "superuser")
        with pytest.raises(ValueError, match="name"):
            await create_key(conn, "  ", "ingest")
        # The database enforces the same role list for writers that bypass this module.
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(
                "INSERT INTO api_keys (key_id, name, role, key_hash) VALUES (%s, 'x', 'root', %s)",
                (uuid.uuid4().hex[:12], uuid.uuid4().hex),
            )


async def test_audit_rows_are_append_only(db_pool):
    principal = Principal("k-audit", "auditor", "ops")
    workflow_id = f"batch-cam-{uuid.uuid4().hex[:8]}"
    async with db_pool.connection() as conn:
        audit_id = await record_audit(
            conn, principal, "batch.create", f"batches/{workflow_id}", workflow_id, {"frames": 3}, request_id="req-1"
        )
        row = await (await conn.execute("SELECT * FROM audit_log WHERE audit_id = %s", (audit_id,))).fetchone()
        assert row["key_id"] == "k-audit" and row["key_name"] == "auditor" and row["role"] == "ops"
        assert row["action"] == "batch.create" and row["workflow_id"] == workflow_id
        assert row["details"] == {"frames": 3} and row["request_id"] == "req-1" and row["at"] is not None

        for statement in (
            "UPDATE audit_log SET action = 'nothing' WHERE audit_id = %s",
            "DELETE FROM audit_log WHERE audit_id = %s",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                await conn.execute(statement, (audit_id,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            await conn.execute("TRUNCATE audit_log")
        again = await (await conn.execute("SELECT * FROM audit_log WHERE audit_id = %s", (audit_id,))).fetchone()
    assert again == row


def _app(db_pool) -> FastAPI:
    app = FastAPI()
    app.state.pool = db_pool
    app.add_middleware(RequestIdMiddleware)

    @app.get("/ingest")
    async def ingest_only(p: Annotated[Principal, Depends(require_roles("ingest"))]) -> dict[str, str]:
        return {"key_id": p.key_id, "role": p.role}

    @app.get("/review")
    async def review_or_ops(p: Annotated[Principal, Depends(require_roles("reviewer", "ops"))]) -> dict[str, str]:
        return {"key_id": p.key_id, "role": p.role}

    @app.post("/audited")
    async def audited(request: Request, p: Annotated[Principal, Depends(require_roles("ingest"))]) -> dict[str, int]:
        async with request.app.state.pool.connection() as conn:
            audit_id = await record_audit(conn, p, "thing.create", "things/1")
        return {"audit_id": audit_id}

    @app.get("/frame")
    async def page_image(p: Annotated[Principal, Depends(require_roles_or_session("reviewer"))]) -> dict[str, str]:
        return {"key_id": p.key_id, "role": p.role}

    return app


@pytest.fixture
async def keys(db_pool):
    async with db_pool.connection() as conn:
        made = {role: await create_key(conn, _name(), role) for role in ROLES}
        revoked = await create_key(conn, _name(), "ingest")
        await revoke_key(conn, revoked.key_id)
    made["revoked"] = revoked
    return made


async def test_require_roles_401_403_and_admin(db_pool, keys):
    transport = httpx.ASGITransport(app=_app(db_pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        r = await http.get("/ingest")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "API key is required" in r.json()["detail"]

        for bad in ("sl_nope_nope", keys["revoked"].raw_key):
            r = await http.get("/ingest", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]

        r = await http.get("/ingest", headers={"Authorization": f"Bearer {keys['reviewer'].raw_key}"})
        assert r.status_code == 403
        assert "'reviewer'" in r.json()["detail"] and "ingest" in r.json()["detail"]

        r = await http.get("/ingest", headers={"Authorization": f"Bearer {keys['ingest'].raw_key}"})
        assert r.status_code == 200 and r.json() == {"key_id": keys["ingest"].key_id, "role": "ingest"}
        r = await http.get("/ingest", headers={"X-API-Key": keys["ingest"].raw_key})
        assert r.status_code == 200

        allowed = {"reviewer", "ops", "admin"}
        for role in ROLES:
            r = await http.get("/review", headers={"X-API-Key": keys[role].raw_key})
            assert r.status_code == (200 if role in allowed else 403), role

        # A cookie is not a credential for these routes, and nothing crashes.
    async with httpx.AsyncClient(transport=transport, base_url="http://test", cookies={"session": "x"}) as http:
        assert (await http.get("/ingest")).status_code == 401


async def test_a_session_cookie_is_a_credential_only_where_the_page_needs_it(db_pool, keys):
    """Server-side sessions: the cookie names a session row (stored hashed), counts on the page's image
    route only, never on other /v1 routes (no cross-site requests riding on a signed-in browser), and
    stops counting when the session is revoked, expires, or its key is revoked."""
    async with db_pool.connection() as conn:
        raw, session = await sessions.create(conn, keys["reviewer"].key_id, 3600)
        row = await (await conn.execute("SELECT * FROM review_sessions WHERE session_hash = %s",
                                        (session.session_hash,))).fetchone()
    assert row["session_hash"] == sessions.hash_session_id(raw) and all(raw not in str(v) for v in row.values())
    transport = httpx.ASGITransport(app=_app(db_pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", cookies={SESSION_COOKIE: raw}) as http:
        r = await http.get("/frame")
        assert r.status_code == 200 and r.json() == {"key_id": keys["reviewer"].key_id, "role": "reviewer"}
        assert (await http.get("/review")).status_code == 401, "the cookie is not a key for the API"
        # An explicit header wins over the session.
        r = await http.get("/frame", headers={"X-API-Key": keys["admin"].raw_key})
        assert r.json()["role"] == "admin"
        async with db_pool.connection() as conn:
            assert await sessions.revoke(conn, session.session_hash)
            assert not await sessions.revoke(conn, session.session_hash)
        assert (await http.get("/frame")).status_code == 401, "sign-out ends the session wherever its cookie is"

    async with db_pool.connection() as conn:
        expired_raw, _ = await sessions.create(conn, keys["reviewer"].key_id, -1)
        other = await create_key(conn, _name(), "reviewer")
        orphan_raw, _ = await sessions.create(conn, other.key_id, 3600)
        await revoke_key(conn, other.key_id)
        for dead in (expired_raw, orphan_raw, "", "x" * 500, "né"):
            assert await sessions.live(conn, dead) is None
    for dead in (expired_raw, orphan_raw, "forged"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test", cookies={SESSION_COOKIE: dead}) as h:
            assert (await h.get("/frame")).status_code == 401


async def test_keys_may_be_scoped_to_sites_and_cameras(db_pool):
    async with db_pool.connection() as conn:
        site_key = await create_key(conn, _name(), "reviewer", site_ids=["plant-a", "plant-b"])
        camera_key = await create_key(conn, _name(), "ingest", site_ids=["plant-a"], camera_ids=["line-1"])
        whole = await create_key(conn, _name(), "ingest")
        by_site = await authenticate_key(conn, site_key.raw_key)
        by_camera = await active_principal(conn, camera_key.key_id)
        unscoped = await authenticate_key(conn, whole.raw_key)
        listed = {k.key_id: k for k in await list_keys(conn)}
        for bad in (["x" * 129], [""], ["a\nb"], [f"s{i}" for i in range(101)]):
            with pytest.raises(ValueError):
                await create_key(conn, _name(), "ingest", site_ids=bad)
    assert by_site is not None and by_camera is not None and unscoped is not None
    assert by_site.site_ids == ("plant-a", "plant-b") and by_site.scoped and not unscoped.scoped
    assert listed[camera_key.key_id].camera_ids == ("line-1",)

    assert by_site.allows("plant-b", "any-camera") and unscoped.allows(None, None)
    refusal = by_site.scope_refusal("plant-c", "line-1")
    assert refusal is not None and "plant-a, plant-b" in refusal and "'plant-c'" in refusal
    assert by_camera.allows("plant-a", "line-1")
    assert not by_camera.allows("plant-a", "line-2") and not by_camera.allows("plant-b", "line-1")
    assert not by_site.allows(None), "what cannot be shown to be inside the scope is outside it"
    with pytest.raises(HTTPException) as refused:
        require_scope(by_camera, "plant-a", "line-2")
    assert refused.value.status_code == 403 and "line-1" in refused.value.detail
    require_scope(by_camera, "plant-a", "line-1")


async def test_audit_row_carries_the_request_id(db_pool, keys):
    transport = httpx.ASGITransport(app=_app(db_pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        r = await http.post("/audited", headers={"X-API-Key": keys["ingest"].raw_key, "X-Request-ID": "req-abc.1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-abc.1"
        r2 = await http.post("/audited", headers={"X-API-Key": keys["ingest"].raw_key})
        generated = r2.headers["x-request-id"]
    async with db_pool.connection() as conn:
        select = "SELECT * FROM audit_log WHERE audit_id = %s"
        row = await (await conn.execute(select, (r.json()["audit_id"],))).fetchone()
        row2 = await (await conn.execute(select, (r2.json()["audit_id"],))).fetchone()
    assert row["request_id"] == "req-abc.1" and row["key_id"] == keys["ingest"].key_id
    assert row2["request_id"] == generated and len(generated) == 32


def test_require_roles_rejects_unknown_role_names():
    with pytest.raises(ValueError, match="unknown roles"):
        require_roles("ingest", "root")
    assert require_roles("ops").allowed_roles == {"ops", "admin"}  # type: ignore[attr-defined]


def test_keys_cli_create_list_revoke(postgres_url, monkeypatch):
    from cli.keys import keys_app
    from infra.settings import get_settings

    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        name = _name()
        out = runner.invoke(keys_app, ["create", "--name", name, "--role", "ml-engineer"])
        assert out.exit_code == 0, out.output
        raw = out.output.strip().splitlines()[-1]
        assert raw.startswith("sl_")
        key_id = raw.split("_")[1]

        bad = runner.invoke(keys_app, ["create", "--name", name, "--role", "wizard"])
        assert bad.exit_code != 0 and "unknown role" in bad.output

        scoped = runner.invoke(keys_app, ["create", "--name", _name(), "--role", "ingest", "--site", "plant-a",
                                          "--camera", "line-1", "--camera", "line-2"])
        assert scoped.exit_code == 0, scoped.output
        assert "scope: sites plant-a; cameras line-1, line-2" in scoped.output
        scoped_id = scoped.output.strip().splitlines()[-1].split("_")[1]

        listed = runner.invoke(keys_app, ["list"], env={"COLUMNS": "250"})
        assert listed.exit_code == 0 and key_id in listed.output and raw not in listed.output
        assert "sites plant-a; cameras line-1, line-2" in listed.output

        assert runner.invoke(keys_app, ["revoke", key_id]).exit_code == 0
        assert runner.invoke(keys_app, ["revoke", key_id]).exit_code == 1
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT revoked_at IS NOT NULL, key_hash FROM api_keys WHERE key_id = %s", (key_id,)
            ).fetchone()
            actions = [r[0] for r in conn.execute(
                "SELECT action FROM audit_log WHERE resource = %s ORDER BY audit_id", (f"api_keys/{key_id}",)
            )]
            scope = conn.execute("SELECT details FROM audit_log WHERE resource = %s",
                                 (f"api_keys/{scoped_id}",)).fetchone()
        assert row is not None
        revoked, stored = row
        assert revoked and stored == hash_key(raw)
        assert actions == ["api_key.create", "api_key.revoke"], "key administration is audited"
        assert scope is not None and scope[0]["site_ids"] == ["plant-a"]
    finally:
        get_settings.cache_clear()
