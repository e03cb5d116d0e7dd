"""The `review_sessions` table: server-side sessions of the reviewer page (migration 0009).

The browser holds only a random session id (256 bits) in an HttpOnly cookie; the table stores its
sha256, so a copy of the table cannot be replayed as cookies. A session is live until its expiry, its
sign-out (`revoke`), or the revocation of its key (`live` joins api_keys). Its `state` is the page's
memory (queue scope, task in hand, skipped tasks, a flash message), which never travels in the cookie.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection

# Expired and revoked rows are kept this long (for the audit trail's sake), then deleted.
_KEEP_ENDED = "7 days"


def hash_session_id(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Session:
    session_hash: str
    key_id: str
    csrf_token: str
    expires_at: datetime
    state: dict[str, Any] = field(default_factory=dict)


async def create(conn: DbConnection, key_id: str, max_age_s: float) -> tuple[str, Session]:
    """A new session for a key: (the raw id for the cookie, the session). The raw id is not stored."""
    raw = secrets.token_urlsafe(32)
    cur = await conn.execute(
        "INSERT INTO review_sessions (session_hash, key_id, csrf_token, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
        " RETURNING session_hash, key_id, csrf_token, expires_at, state",
        (hash_session_id(raw), key_id, secrets.token_urlsafe(24), max_age_s),
    )
    row = await cur.fetchone()
    assert row is not None
    return raw, Session(**row)


async def live(conn: DbConnection, raw: str) -> Session | None:
    """The session with this raw id when it is unexpired, not signed out, and its key not revoked."""
    if not raw or len(raw) > 128 or not raw.isascii():
        return None
    cur = await conn.execute(
        "UPDATE review_sessions s SET last_seen_at = now() FROM api_keys k"
        " WHERE s.session_hash = %s AND s.revoked_at IS NULL AND s.expires_at > now()"
        "   AND k.key_id = s.key_id AND k.revoked_at IS NULL"
        " RETURNING s.session_hash, s.key_id, s.csrf_token, s.expires_at, s.state",
        (hash_session_id(raw),),
    )
    row = await cur.fetchone()
    return Session(**row) if row else None


async def save_state(conn: DbConnection, session: Session) -> None:
    await conn.execute("UPDATE review_sessions SET state = %s WHERE session_hash = %s AND revoked_at IS NULL",
                       (Jsonb(session.state), session.session_hash))


async def revoke(conn: DbConnection, session_hash: str) -> bool:
    """Sign-out: the session ends now, wherever its cookie is. False when it had ended already."""
    cur = await conn.execute(
        "UPDATE review_sessions SET revoked_at = now() WHERE session_hash = %s AND revoked_at IS NULL",
        (session_hash,))
    return cur.rowcount == 1


async def delete_ended(conn: DbConnection) -> int:
    """Delete sessions that ended (expired or signed out) over a week ago; how many."""
    cur = await conn.execute(
        "DELETE FROM review_sessions WHERE coalesce(revoked_at, expires_at) < now() - %s::interval", (_KEEP_ENDED,))
    return cur.rowcount
