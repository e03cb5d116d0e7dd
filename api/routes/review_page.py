"""The reviewer page at /review: server-rendered, keyboard first. Sign in with an API key (kept in the
signed cookie session), get the next task, label it with one key per class, `u` unusable, `n` next.

Every form carries a per-session CSRF token; the session cookie is SameSite=Lax as well.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.auth import KeyRefused, Principal, allowed_roles, principal_for, session_principal
from api.callers import REVIEWERS
from api.deps import DbDep, ReviewQueueDep
from api.review_metrics import observe_decision
from api.services.review_queue import ReviewQueue, ReviewRefused
from infra.db import DbPool
from infra.tables.review_tasks import SCOPE_FIELDS
from workflows.review_types import PRIORITIES, UNUSABLE

router = APIRouter(prefix="/review", tags=["reviewer page"], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
# The page serves the same people as the review API.
PAGE_ROLES = allowed_roles(REVIEWERS)
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
    return isinstance(expected, str) and secrets.compare_digest(expected.encode(), token.encode())


async def _form_principal(request: Request, pool: DbPool, csrf: str) -> Principal | RedirectResponse:
    """The signed-in reviewer posting a page form, or where to send them instead (sign-in, or back to
    the page with a message when the form's CSRF token is stale)."""
    principal = await session_principal(request, pool, PAGE_ROLES)
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
async def sign_in_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "review_sign_in.html", {"csrf": _csrf(request), "error": None})


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, pool: DbDep, api_key: Annotated[str, Form()],
                  csrf: Annotated[str, Form()]) -> Response:
    error = None
    if not _csrf_ok(request, csrf):
        error = "The form expired; try again."
    else:
        try:
            await principal_for(pool, api_key.strip(), PAGE_ROLES)
        except KeyRefused as refused:
            error = refused.message
    if error:
        return templates.TemplateResponse(request, "review_sign_in.html", {"csrf": _csrf(request), "error": error},
                                          status_code=401)
    request.session.clear()
    request.session["api_key"] = api_key.strip()
    return _see_other("/review")


@router.post("/sign-out")
async def sign_out(request: Request, csrf: Annotated[str, Form()]) -> Response:
    if _csrf_ok(request, csrf):
        request.session.clear()
    return _see_other("/review/sign-in")


@router.get("", response_class=HTMLResponse)
async def review_page(request: Request, pool: DbDep, queue: ReviewQueueDep) -> Response:
    principal = await session_principal(request, pool, PAGE_ROLES)
    if principal is None:
        return _see_other("/review/sign-in")
    # `/review?site_id=plant-a` (or camera_id, batch_id, reason) narrows this session's queue; the
    # scope stays until another is given (`/review?scope=all` clears it).
    params = request.query_params
    if "scope" in params or any(f in params for f in SCOPE_FIELDS):
        request.session["scope"] = {f: params[f] for f in SCOPE_FIELDS if params.get(f)}
    task = view = None
    current = request.session.get("current") or await queue.claimed_elsewhere(principal)
    if current:
        view = await queue.held_by(current, principal)
        if view is None:
            request.session.pop("current", None)
        else:
            request.session["current"] = current
            task = await queue.get(current)
    now = datetime.now(UTC)
    context = {
        "principal": principal,
        "csrf": _csrf(request),
        "flash": request.session.pop("flash", None),
        "task": task,
        "view": view,
        "unusable": UNUSABLE,
        "priority_name": PRIORITIES[task["priority"]] if task else None,
        "scope": request.session.get("scope") or {},
        "sla_left": _seconds_until(view.sla_due_at, now) if view else None,
        "lease_left": _seconds_until(view.claim_expires_at, now) if view else None,
    }
    return templates.TemplateResponse(request, "review.html", context)


def _seconds_until(moment: str | None, now: datetime) -> float | None:
    return (datetime.fromisoformat(moment) - now).total_seconds() if moment else None


async def _claim_next(request: Request, queue: ReviewQueue, principal: Principal) -> None:
    skipped = request.session.get("skipped", [])
    view = await queue.claim_next(principal, skip=skipped, scope=request.session.get("scope"))
    if view is None:
        request.session.pop("current", None)
        _flash(request, "The queue is empty for you right now.")
        return
    request.session["current"] = view.review_id
    await queue.audit(principal, "review.claim", view.review_id, {"via": "page", "outcome": "claimed"})


@router.post("/next")
async def next_task(request: Request, pool: DbDep, queue: ReviewQueueDep, csrf: Annotated[str, Form()]) -> Response:
    """Skip the task in hand (released back to the queue) and claim the next one."""
    principal = await _form_principal(request, pool, csrf)
    if isinstance(principal, RedirectResponse):
        return principal
    current = request.session.get("current")
    if current:
        with contextlib.suppress(ReviewRefused):  # the claim had lapsed already
            await queue.audited(principal, "review.release", current, {"via": "page"},
                                queue.release(current, principal))
        request.session["skipped"] = [current, *request.session.get("skipped", [])][:_SKIP_MEMORY]
    await _claim_next(request, queue, principal)
    return _see_other("/review")


@router.post("/decision")
async def decide(request: Request, pool: DbDep, queue: ReviewQueueDep, review_id: Annotated[str, Form()],
                 label: Annotated[str, Form()], csrf: Annotated[str, Form()],
                 note: Annotated[str, Form()] = "") -> Response:
    principal = await _form_principal(request, pool, csrf)
    if isinstance(principal, RedirectResponse):
        return principal
    try:
        view = await queue.audited(principal, "review.decision", review_id,
                                   {"via": "page", "label": label, "note": note or None},
                                   queue.decide(review_id, principal, label, note or None))
    except ReviewRefused as refused:
        _flash(request, f"Not saved: {refused.message}", "error")
        return _see_other("/review")
    observe_decision(view)
    _flash(request, f"Saved {label!r} for {review_id}.")
    await _claim_next(request, queue, principal)
    return _see_other("/review")
