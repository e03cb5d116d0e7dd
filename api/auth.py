"""Who may call what: API keys, roles and scopes, and the reviewer page's sessions.

A key arrives as `Authorization: Bearer <key>` or as `X-API-Key: <key>`; every route declares its roles
once (api.callers) and admin may call everything. A key may be scoped to sites and cameras:
`require_scope` (the rule is `Principal.scope_refusal`) answers 403 with the reason for anything outside.

The reviewer page signs in with a key and gets a server-side session (infra.tables.sessions): the
browser holds only a random id in an HttpOnly cookie, and the session ends at sign-out, at its expiry
or when its key is revoked. A cookie is a credential only for the page itself and for the frame image
it shows (`require_roles_or_session`); every other /v1 route takes a key in a header, so a signed-in
browser cannot be made to call them from another site.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import DbDep
from infra.db import DbPool
from infra.settings import Settings
from infra.tables import sessions
from infra.tables.api_keys import ROLES, Principal, active_principal, authenticate_key

__all__ = ["ROLES", "SESSION_COOKIE", "KeyRefused", "Principal", "allowed_roles", "clear_session_cookie",
           "cookie_secure", "principal_for", "require_roles", "require_roles_or_session", "require_scope",
           "review_session", "session_principal", "set_session_cookie"]

# auto_error=False: a missing key must produce our 401 (with WWW-Authenticate), not FastAPI's 403.
# Declared as security schemes so the OpenAPI page offers an "Authorize" button for either header.
_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer sl_...`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `X-API-Key: sl_...`")

_CHALLENGE = 'Bearer realm="sightline"'
SESSION_COOKIE = "sightline_review_session"
_UNREAD = object()  # the request's cookie was not looked up yet


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


def _check_role(principal: Principal, allowed: frozenset[str]) -> Principal:
    if principal.role not in allowed:
        needed = ", ".join(r for r in ROLES if r in allowed)
        raise KeyRefused(status.HTTP_403_FORBIDDEN,
                         f"key {principal.key_id!r} has role {principal.role!r}; this needs one of: {needed}")
    return principal


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
    return _check_role(principal, allowed)


def require_scope(principal: Principal, site_id: str | None, camera_id: str | None = None) -> None:
    """403 with the reason when the key's scope does not cover this site's camera."""
    refusal = principal.scope_refusal(site_id, camera_id)
    if refusal:
        raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)


# ---- reviewer page sessions ---------------------------------------------------------------------------

async def review_session(request: Request, pool: DbPool) -> sessions.Session | None:
    """The live session named by the request's cookie (looked up once per request), or None."""
    cached = getattr(request.state, "review_session", _UNREAD)
    if cached is None or isinstance(cached, sessions.Session):
        return cached
    raw = request.cookies.get(SESSION_COOKIE)
    found = None
    if raw:
        async with pool.connection() as conn:
            found = await sessions.live(conn, raw)
    request.state.review_session = found
    return found


async def session_principal(request: Request, pool: DbPool, allowed: frozenset[str]) -> Principal | None:
    """The signed-in page user, as their key is now (revoked, or a role no longer allowed: None)."""
    session = await review_session(request, pool)
    if session is None:
        return None
    async with pool.connection() as conn:
        principal = await active_principal(conn, session.key_id)
    if principal is None or principal.role not in allowed:
        return None
    request.state.principal = principal
    return principal


def cookie_secure(request: Request, settings: Settings) -> bool:
    """Secure (sent over HTTPS only) when the request came over HTTPS, unless the settings force it."""
    return settings.session_cookie_secure if settings.session_cookie_secure is not None else (
        request.url.scheme == "https")


def set_session_cookie(response: Response, raw: str, request: Request, settings: Settings) -> None:
    """HttpOnly (no script reads it), SameSite=Lax (no cross-site POST carries it), Secure over HTTPS."""
    response.set_cookie(SESSION_COOKIE, raw, max_age=settings.review_session_max_age_s, path="/", httponly=True,
                        samesite="lax", secure=cookie_secure(request, settings))


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=cookie_secure(request, settings))


# ---- route dependencies -------------------------------------------------------------------------------

def _refused(refused: KeyRefused) -> HTTPException:
    headers = {"WWW-Authenticate": refused.challenge} if refused.challenge else None
    return HTTPException(refused.status_code, refused.message, headers=headers)


def _principal_dependency(roles: tuple[str, ...], *, session_counts: bool) -> Callable[..., Awaitable[Principal]]:
    allowed = allowed_roles(roles)

    async def current_principal(
        request: Request,
        pool: DbDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        raw = (bearer.credentials if bearer else None) or header_key
        if raw is None and session_counts and (principal := await session_principal(request, pool, allowed)):
            return principal
        try:
            principal = await principal_for(pool, raw, allowed)
        except KeyRefused as refused:
            raise _refused(refused) from None
        request.state.principal = principal
        return principal

    # The role-matrix test and the docs read what a route allows from its dependency.
    current_principal.allowed_roles = allowed  # type: ignore[attr-defined]
    return current_principal


def require_roles(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller by the key in its headers and returns its Principal
    when its role is one of `roles` (admin always passes): 401 without a key or with a bad one, 403 for
    a wrong role. A session cookie is not a credential here."""
    return _principal_dependency(roles, session_counts=False)


def require_roles_or_session(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """As `require_roles`, and without a key in the headers the reviewer page's session cookie counts:
    only for the read-only routes the page itself loads (the frame image under review)."""
    return _principal_dependency(roles, session_counts=True)
