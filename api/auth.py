"""Who may call what: API keys and roles.

A key arrives as `Authorization: Bearer <key>`, as `X-API-Key: <key>`, or, for the reviewer pages, in
the signed cookie session (`request.session["api_key"]`) when a SessionMiddleware is installed. Every
route declares its roles with `require_roles(...)`; admin may call everything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import DbDep
from infra.api_keys import ROLES, Principal, authenticate_key

__all__ = ["ROLES", "Principal", "require_roles"]

# auto_error=False: a missing key must produce our 401 (with WWW-Authenticate), not FastAPI's 403.
# Declared as security schemes so the OpenAPI page offers an "Authorize" button for either header.
_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer sl_...`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `X-API-Key: sl_...`")

_CHALLENGE = 'Bearer realm="sightline"'


def _session_key(request: Request) -> str | None:
    # request.session asserts when no SessionMiddleware is installed; the scope lookup does not.
    session = request.scope.get("session")
    if isinstance(session, dict):
        value = session.get("api_key")
        return value if isinstance(value, str) and value else None
    return None


def require_roles(*roles: str):
    """A dependency that authenticates the caller and returns its Principal when its role is one of
    `roles` (admin always passes): 401 without a key or with a bad one, 403 for a wrong role."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown roles {unknown}: use {', '.join(ROLES)}")
    allowed = frozenset(roles) | {"admin"}
    needed = ", ".join(r for r in ROLES if r in allowed)

    async def current_principal(
        request: Request,
        pool: DbDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        raw = (bearer.credentials if bearer else None) or header_key or _session_key(request)
        if not raw:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                headers={"WWW-Authenticate": _CHALLENGE},
            )
        async with pool.connection() as conn:
            principal = await authenticate_key(conn, raw)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "the API key is not valid: unknown, malformed or revoked",
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"key {principal.key_id!r} has role {principal.role!r}; this route needs one of: {needed}",
            )
        request.state.principal = principal
        return principal

    # The role-matrix test and the docs read what a route allows from its dependency.
    current_principal.allowed_roles = allowed
    return current_principal
