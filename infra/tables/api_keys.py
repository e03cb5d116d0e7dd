"""API keys: created with a random high-entropy token that is shown once and stored only as a hash.

A key reads `sl_<key_id>_<secret>`. The key id is public (it appears in listings and the audit log);
the secret is 256 random bits. Because the token is random and long, one sha256 is the right hash:
a slow password hash protects guessable secrets and would only add latency to every request here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import dict_row

ROLES = ("ingest", "reviewer", "ml-engineer", "ops", "admin")
KEY_PREFIX = "sl_"
# last_used_at is a hint for operators, not an audit record: write it at most this often per key.
_LAST_USED_RESOLUTION = "1 minute"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key that authenticated the request, its name and role."""

    key_id: str
    name: str
    role: str


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    name: str
    role: str
    raw_key: str  # shown to the creator once; nowhere else


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new (key_id, raw key) pair."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


async def create_key(conn, name: str, role: str) -> CreatedKey:
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name that says who holds it")
    _check_role(role)
    key_id, raw = generate_key()
    await conn.execute(
        "INSERT INTO api_keys (key_id, name, role, key_hash) VALUES (%s, %s, %s, %s)",
        (key_id, name, role, hash_key(raw)),
    )
    return CreatedKey(key_id, name, role, raw)


async def authenticate_key(conn, raw: str | None) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else."""
    if not raw or not raw.startswith(KEY_PREFIX) or len(raw) > 256:
        return None
    digest = hash_key(raw)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT key_id, name, role, key_hash, last_used_at < now() - %s::interval AS stale,"
            "       last_used_at IS NULL AS never_used"
            "  FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
            (_LAST_USED_RESOLUTION, digest),
        )
        row = await cur.fetchone()
    # The lookup is by hash, so timing reveals nothing about the key; compare again anyway so a
    # collation or index surprise can never turn into a match.
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    if row["stale"] or row["never_used"]:
        await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s", (row["key_id"],))
    return Principal(row["key_id"], row["name"], row["role"])


async def list_keys(conn, include_revoked: bool = True) -> list[ApiKeyInfo]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT key_id, name, role, created_at, last_used_at, revoked_at FROM api_keys"
            + ("" if include_revoked else " WHERE revoked_at IS NULL")
            + " ORDER BY created_at, key_id"
        )
        return [ApiKeyInfo(**row) for row in await cur.fetchall()]


async def revoke_key(conn, key_id: str) -> bool:
    """Revoke a key; False when no such unrevoked key exists. Rows are kept: the audit log names them."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
    )
    return cur.rowcount == 1
