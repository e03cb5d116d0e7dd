"""The reviewer page at /review: server-rendered, keyboard first. Sign in with an API key (kept in the
signed cookie session), get the next task, label it with one key per class, `u` unusable, `n` next.

Every form carries a per-session CSRF token; the session cookie is SameSite=Lax as well.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api import review_queue
from api.auth import Principal
from api.deps import DbDep, TemporalDep
from api.review_metrics import observe_decision
from api.review_queue import SCOPE_FIELDS, ReviewRefused
from api.routes.reviews import audit
from infra.api_keys import authenticate_key
from workflows.review_types import PRIORITIES, UNUSABLE

router = APIRouter(prefix="/review", tags=["reviewer page"], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
PAGE_ROLES = ("reviewer", "ml-engineer", "admin")
_SKIP_MEMORY = 50  # tasks a reviewer skipped with `n` are not offered to them again this session


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def _csrf_ok(request: Request, token: str) -> bool:
    expected = request.session.get("csrf")
    return bool(expected) and secrets.compare_digest(expected, token)


async def _principal(request: Request, pool) -> Principal | None:
    raw = request.session.get("api_key")
    if not raw:
        return None
    async with pool.connection() as conn:
        principal = await authenticate_key(conn, raw)
    if principal is None or principal.role not in PAGE_ROLES:
        request.session.pop("api_key", None)  # revoked since sign-in
        return None
    return principal


async def _form_principal(request: Request, pool, csrf: str) -> Principal | RedirectResponse:
    """The signed-in reviewer posting a page form, or where to send them instead (sign-in, or back to
    the page with a message when the form's CSRF token is stale)."""
    principal = await _principal(request, pool)
    if principal is None:
        return _see_other("/review/sign-in")
    if not _csrf_ok(request, csrf):
        _flash(request, "The form expired; try again.", "error")
        return _see_other("/review")
    return principal


def _flash(request: Request, message: str, kind: str = "info") -> None:
    """A message for the next page; one already waiting is kept in front of it."""
    waiting = request.session.get("flash")
    if waiting:
        message = f"{waiting['message']} {message}"
        kind = "error" if "error" in (kind, waiting["kind"]) else kind
    request.session["flash"] = {"message": message, "kind": kind}


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request):
    return templates.TemplateResponse(request, "review_sign_in.html", {"csrf": _csrf(request), "error": None})


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, pool: DbDep, api_key: Annotated[str, Form()], csrf: Annotated[str, Form()]):
    error = None
    if not _csrf_ok(request, csrf):
        error = "The form expired; try again."
    else:
        async with pool.connection() as conn:
            principal = await authenticate_key(conn, api_key.strip())
        if principal is None:
            error = "That API key is not valid (unknown, malformed or revoked)."
        elif principal.role not in PAGE_ROLES:
            error = (f"Key {principal.key_id} has role {principal.role!r}; "
                     "reviewing needs reviewer, ml-engineer or admin.")
    if error:
        return templates.TemplateResponse(request, "review_sign_in.html", {"csrf": _csrf(request), "error": error},
                                          status_code=401)
    request.session.clear()
    request.session["api_key"] = api_key.strip()
    return _see_other("/review")


@router.post("/sign-out")
async def sign_out(request: Request, csrf: Annotated[str, Form()]):
    if _csrf_ok(request, csrf):
        request.session.clear()
    return _see_other("/review/sign-in")


@router.get("", response_class=HTMLResponse)
async def review_page(request: Request, pool: DbDep, temporal: TemporalDep):
    principal = await _principal(request, pool)
    if principal is None:
        return _see_other("/review/sign-in")
    # `/review?site_id=plant-a` (or camera_id, batch_id, reason) narrows this session's queue; the
    # scope stays until another is given (`/review?scope=all` clears it).
    params = request.query_params
    if "scope" in params or any(f in params for f in SCOPE_FIELDS):
        request.session["scope"] = {f: params[f] for f in SCOPE_FIELDS if params.get(f)}
    task = view = None
    current = request.session.get("current") or await _claim_held_elsewhere(pool, principal)
    if current:
        view = await review_queue.held_by(pool, temporal, current, principal)
        if view is None:
            request.session.pop("current", None)
        else:
            request.session["current"] = current
            task = await review_queue.get_review(pool, current)
    now = datetime.now(timezone.utc)
    context = {
        "principal": principal,
        "csrf": _csrf(request),
        "flash": request.session.pop("flash", None),
        "task": task,
        "view": view,
        "unusable": UNUSABLE,
        "priority_name": PRIORITIES[task["priority"]] if task else None,
        "scope": request.session.get("scope") or {},
        "sla_left": review_queue.seconds_until(view.sla_due_at, now) if view else None,
        "lease_left": review_queue.seconds_until(view.claim_expires_at, now) if view else None,
    }
    return templates.TemplateResponse(request, "review.html", context)


async def _claim_held_elsewhere(pool, principal: Principal) -> str | None:
    """A task this reviewer still holds from another session (a restarted browser): resume it."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT review_id FROM review_tasks WHERE claimed_by = %s AND status = 'claimed'"
            " AND claim_expires_at > now() ORDER BY claim_expires_at LIMIT 1",
            (principal.key_id,),
        )
        row = await cur.fetchone()
    return row["review_id"] if row else None


async def _claim_next(request: Request, pool, temporal, principal: Principal) -> None:
    skipped = request.session.get("skipped", [])
    view = await review_queue.claim_next(pool, temporal, principal, skip=skipped, scope=request.session.get("scope"))
    if view is None:
        request.session.pop("current", None)
        _flash(request, "The queue is empty for you right now.")
        return
    request.session["current"] = view.review_id
    await audit(pool, principal, "review.claim", view.review_id, {"via": "page", "outcome": "claimed"})


@router.post("/next")
async def next_task(request: Request, pool: DbDep, temporal: TemporalDep, csrf: Annotated[str, Form()]):
    """Skip the task in hand (released back to the queue) and claim the next one."""
    principal = await _form_principal(request, pool, csrf)
    if isinstance(principal, RedirectResponse):
        return principal
    current = request.session.get("current")
    if current:
        try:
            await review_queue.release(pool, temporal, current, principal)
            await audit(pool, principal, "review.release", current, {"via": "page", "outcome": "pending"})
        except ReviewRefused:
            pass  # the claim had lapsed already
        request.session["skipped"] = ([current] + request.session.get("skipped", []))[:_SKIP_MEMORY]
    await _claim_next(request, pool, temporal, principal)
    return _see_other("/review")


@router.post("/decision")
async def decide(request: Request, pool: DbDep, temporal: TemporalDep, review_id: Annotated[str, Form()],
                 label: Annotated[str, Form()], csrf: Annotated[str, Form()], note: Annotated[str, Form()] = ""):
    principal = await _form_principal(request, pool, csrf)
    if isinstance(principal, RedirectResponse):
        return principal
    try:
        view = await review_queue.decide(pool, temporal, review_id, principal, label, note or None)
    except ReviewRefused as refused:
        await audit(pool, principal, "review.decision", review_id,
                    {"via": "page", "label": label, "outcome": "refused", "refusal": refused.kind})
        _flash(request, f"Not saved: {refused.message}", "error")
        return _see_other("/review")
    await audit(pool, principal, "review.decision", review_id,
                {"via": "page", "label": label, "note": note or None, "outcome": view.status})
    observe_decision(view)
    _flash(request, f"Saved {label!r} for {review_id}.")
    await _claim_next(request, pool, temporal, principal)
    return _see_other("/review")
