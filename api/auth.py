"""Who may call what: API keys and roles.

A key arrives as `Authorization: Bearer <key>`, as `X-API-Key: <key>`, or, for the reviewer pages, in
the signed cookie session (`request.session["api_key"]`) when a SessionMiddleware is installed. Every
route declares its roles once (api.callers); admin may call everything. The reviewer page signs in and
checks its session through `principal_for` too, so the API and the page apply the same rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import DbDep
from infra.db import DbPool
from infra.tables.api_keys import ROLES, Principal, authenticate_key

__all__ = ["ROLES", "KeyRefused", "Principal", "allowed_roles", "principal_for", "require_roles",
           "session_principal"]

# auto_error=False: a missing key must produce our 401 (with WWW-Authenticate), not FastAPI's 403.
# Declared as security schemes so the OpenAPI page offers an "Authorize" button for either header.
_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer sl_...`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `X-API-Key: sl_...`")

_CHALLENGE = 'Bearer realm="sightline"'


class KeyRefused(Exception):
    """No key, a key that is not valid, or a role that may not do this; `status` is 401 or 403."""

    def __init__(self, status_code: int, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.challenge = challenge


def allowed_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles given plus admin; unknown role names are a programming error."""
    roles = tuple(roles)
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown roles {unknown}: use {', '.join(ROLES)}")
    return frozenset(roles) | {"admin"}


async def principal_for(pool: DbPool, raw: str | None, allowed: frozenset[str]) -> Principal:
    """The principal of a valid, unrevoked key whose role is allowed; KeyRefused otherwise."""
    if not raw:
        raise KeyRefused(status.HTTP_401_UNAUTHORIZED,
                         "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                         _CHALLENGE)
    async with pool.connection() as conn:
        principal = await authenticate_key(conn, raw)
    if principal is None:
        raise KeyRefused(status.HTTP_401_UNAUTHORIZED, "the API key is not valid: unknown, malformed or revoked",
                         f'{_CHALLENGE}, error="invalid_token"')
    if principal.role not in allowed:
        needed = ", ".join(r for r in ROLES if r in allowed)
        raise KeyRefused(status.HTTP_403_FORBIDDEN,
                         f"key {principal.key_id!r} has role {principal.role!r}; this needs one of: {needed}")
    return principal


def _session_key(request: Request) -> str | None:
    # request.session asserts when no SessionMiddleware is installed; the scope lookup does not.
    session = request.scope.get("session")
    if isinstance(session, dict):
        value = session.get("api_key")
        return value if isinstance(value, str) and value else None
    return None


async def session_principal(request: Request, pool: DbPool, allowed: frozenset[str]) -> Principal | None:
    """The signed-in page user, or None (no session, or its key was revoked or lost the role since
    sign-in, in which case the session forgets it)."""
    raw = _session_key(request)
    if raw is None:
        return None
    try:
        principal = await principal_for(pool, raw, allowed)
    except KeyRefused:
        request.session.pop("api_key", None)
        return None
    request.state.principal = principal
    return principal


def require_roles(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and returns its Principal when its role is one of
    `roles` (admin always passes): 401 without a key or with a bad one, 403 for a wrong role."""
    allowed = allowed_roles(roles)

    async def current_principal(
        request: Request,
        pool: DbDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        raw = (bearer.credentials if bearer else None) or header_key or _session_key(request)
        try:
            principal = await principal_for(pool, raw, allowed)
        except KeyRefused as refused:
            headers = {"WWW-Authenticate": refused.challenge} if refused.challenge else None
            raise HTTPException(refused.status_code, refused.message, headers=headers) from None
        request.state.principal = principal
        return principal

    # The role-matrix test and the docs read what a route allows from its dependency.
    current_principal.allowed_roles = allowed  # type: ignore[attr-defined]
    return current_principal
