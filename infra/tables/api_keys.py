"""API keys: created with a random high-entropy token that is shown once and stored only as a hash.

A key reads `sl_<key_id>_<secret>`. The key id is public (it appears in listings and the audit log);
the secret is 256 random bits. Because the token is random and long, one sha256 is the right hash:
a slow password hash protects guessable secrets and would only add latency to every request here.

A key may be scoped to sites and cameras (`Principal.scope_refusal` is the one rule every route applies).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import dict_row

ROLES = ("ingest", "reviewer", "ml-engineer", "ops", "admin")
KEY_PREFIX = "sl_"
# last_used_at is a hint for operators, not an audit record: write it at most this often per key.
_LAST_USED_RESOLUTION = "1 minute"


# A scope names at most this many sites and cameras, each an id as the API accepts them.
MAX_SCOPE_ENTRIES = 100
MAX_SCOPE_ID_LENGTH = 128


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key that authenticated the request, its name and role, and the sites and
    cameras it is limited to (empty: any)."""

    key_id: str
    name: str
    role: str
    site_ids: tuple[str, ...] = ()
    camera_ids: tuple[str, ...] = ()

    @property
    def scoped(self) -> bool:
        return bool(self.site_ids or self.camera_ids)

    def scope_refusal(self, site_id: str | None, camera_id: str | None = None) -> str | None:
        """None when this key may read or act on that site's camera; otherwise why not (the API answers
        403 with it). A scoped dimension with no value given (None) is out of scope: what cannot be
        shown to be inside the scope is outside it."""
        if self.site_ids and site_id not in self.site_ids:
            return (f"key {self.key_id!r} is limited to sites {', '.join(self.site_ids)};"
                    f" this is {'site ' + repr(site_id) if site_id is not None else 'not tied to one of them'}")
        if self.camera_ids and camera_id not in self.camera_ids:
            return (f"key {self.key_id!r} is limited to cameras {', '.join(self.camera_ids)};"
                    f" this is {'camera ' + repr(camera_id) if camera_id is not None else 'not one of them'}")
        return None

    def allows(self, site_id: str | None, camera_id: str | None = None) -> bool:
        return self.scope_refusal(site_id, camera_id) is None


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    name: str
    role: str
    raw_key: str  # shown to the creator once; nowhere else
    site_ids: tuple[str, ...] = ()
    camera_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    site_ids: tuple[str, ...] = ()
    camera_ids: tuple[str, ...] = ()


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


def _check_scope(kind: str, ids: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(i.strip() for i in ids))
    if len(cleaned) > MAX_SCOPE_ENTRIES:
        raise ValueError(f"a key may be limited to at most {MAX_SCOPE_ENTRIES} {kind}s")
    for value in cleaned:
        if not value or len(value) > MAX_SCOPE_ID_LENGTH or not value.isprintable():
            raise ValueError(f"{kind} {value!r} is not a valid id (1 to {MAX_SCOPE_ID_LENGTH} printable characters)")
    return cleaned


async def create_key(conn, name: str, role: str, *, site_ids: Iterable[str] = (),
                     camera_ids: Iterable[str] = ()) -> CreatedKey:
    """A new key; `site_ids` and `camera_ids` limit what it may see and do (empty: everything its role may)."""
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name that says who holds it")
    _check_role(role)
    sites, cameras = _check_scope("site", site_ids), _check_scope("camera", camera_ids)
    key_id, raw = generate_key()
    await conn.execute(
        "INSERT INTO api_keys (key_id, name, role, key_hash, site_ids, camera_ids) VALUES (%s, %s, %s, %s, %s, %s)",
        (key_id, name, role, hash_key(raw), list(sites), list(cameras)),
    )
    return CreatedKey(key_id, name, role, raw, sites, cameras)


def _principal(row) -> Principal:
    return Principal(row["key_id"], row["name"], row["role"], tuple(row["site_ids"] or ()),
                     tuple(row["camera_ids"] or ()))


async def authenticate_key(conn, raw: str | None) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else."""
    if not raw or not raw.startswith(KEY_PREFIX) or len(raw) > 256:
        return None
    digest = hash_key(raw)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT key_id, name, role, key_hash, site_ids, camera_ids,"
            "       last_used_at < now() - %s::interval AS stale,"
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
    return _principal(row)


async def active_principal(conn, key_id: str) -> Principal | None:
    """The principal of an unrevoked key by its id (a reviewer session names its key this way), as the
    key is now: a revoked key, or one whose scope changed, takes effect on the session's next request."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT key_id, name, role, site_ids, camera_ids FROM api_keys"
                          " WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
        row = await cur.fetchone()
    return _principal(row) if row else None


async def list_keys(conn, include_revoked: bool = True) -> list[ApiKeyInfo]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT key_id, name, role, created_at, last_used_at, revoked_at, site_ids, camera_ids FROM api_keys"
            + ("" if include_revoked else " WHERE revoked_at IS NULL")
            + " ORDER BY created_at, key_id"
        )
        return [ApiKeyInfo(**{**row, "site_ids": tuple(row["site_ids"]), "camera_ids": tuple(row["camera_ids"])})
                for row in await cur.fetchall()]


async def revoke_key(conn, key_id: str) -> bool:
    """Revoke a key; False when no such unrevoked key exists. Rows are kept: the audit log names them."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
    )
    return cur.rowcount == 1
