"""The reviewer page at /review: server-rendered, keyboard first. Sign in with an API key, get the next
task, label it with one key per class, `u` unusable, `n` next. A detection task (one carrying the model's
boxes) shows them on the frame: the reviewer keeps, deletes, moves or draws boxes with the mouse, picks a
box's class with 1-9, and confirms the set with Enter (static/review_boxes.js).

Sign-in opens a server-side session (api.auth, infra.tables.sessions): the cookie carries a random id
only, and the page's memory (queue scope, task in hand, skipped tasks, flash message) stays in the
session row. Sign-out revokes the session wherever its cookie is. Every form carries a CSRF token: the
session's own once signed in, and before that a double-submit token in a short-lived cookie.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.audit import record_audit
from api.auth import (
    KeyRefused,
    Principal,
    allowed_roles,
    clear_session_cookie,
    cookie_secure,
    principal_for,
    review_session,
    session_principal,
    set_session_cookie,
)
from api.callers import REVIEWERS
from api.deps import DbDep, ReviewQueueDep, SettingsDep
from api.review_metrics import observe_decision
from api.services.review_queue import ReviewQueue, ReviewRefused
from infra.db import DbPool
from infra.settings import Settings
from infra.tables import sessions
from infra.tables.review_tasks import SCOPE_FIELDS
from workflows.batch_types import RoutingRules
from workflows.review_types import NO_DEFECT, PRIORITIES, UNUSABLE

router = APIRouter(prefix="/review", tags=["reviewer page"], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
# The page serves the same people as the review API.
PAGE_ROLES = allowed_roles(REVIEWERS)
_SKIP_MEMORY = 50  # tasks a reviewer skipped with `n` are not offered to them again this session
# The sign-in form's double-submit CSRF token: a cookie only this site's pages can read back into the form.
_SIGN_IN_CSRF = "sightline_sign_in_csrf"
_MAX_CSRF = 128
_MAX_BOXES_FORM = 20_000  # a box set as JSON: MAX_REVIEW_BOXES boxes of about 100 characters each


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _csrf_matches(expected: str | None, token: str) -> bool:
    """Constant-time; a token that is not ASCII cannot be ours and is a bad request (400), not a stale form."""
    if not token.isascii() or len(token) > _MAX_CSRF:
        raise HTTPException(400, "malformed CSRF token")
    return bool(expected) and secrets.compare_digest(str(expected).encode(), token.encode())


class PageState:
    """The signed-in reviewer's session as the page uses it; `save` writes changes back."""

    def __init__(self, session: sessions.Session) -> None:
        self.session = session
        self.state: dict[str, Any] = dict(session.state)
        self.csrf = session.csrf_token

    def flash(self, message: str, kind: str = "info") -> None:
        """A message for the next page; one already waiting is kept in front of it."""
        waiting = self.state.get("flash")
        if waiting:
            message = f"{waiting['message']} {message}"
            kind = "error" if "error" in (kind, waiting["kind"]) else kind
        self.state["flash"] = {"message": message, "kind": kind}

    async def save(self, pool: DbPool) -> None:
        if self.state != self.session.state:
            self.session.state = self.state
            async with pool.connection() as conn:
                await sessions.save_state(conn, self.session)


async def _signed_in(request: Request, pool: DbPool) -> tuple[Principal, PageState] | None:
    principal = await session_principal(request, pool, PAGE_ROLES)
    session = await review_session(request, pool)
    if principal is None or session is None:
        return None
    return principal, PageState(session)


async def _form_session(request: Request, pool: DbPool, csrf: str) -> tuple[Principal, PageState] | RedirectResponse:
    """The signed-in reviewer posting a page form, or where to send them instead (sign-in, or back to
    the page with a message when the form's CSRF token is stale)."""
    signed_in = await _signed_in(request, pool)
    if signed_in is None:
        return _see_other("/review/sign-in")
    principal, page = signed_in
    if not _csrf_matches(page.csrf, csrf):
        page.flash("The form expired; try again.", "error")
        await page.save(pool)
        return _see_other("/review")
    return principal, page


def _sign_in_page(request: Request, settings: Settings, error: str | None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(request, "review_sign_in.html", {"csrf": token, "error": error},
                                          status_code=status_code)
    response.set_cookie(_SIGN_IN_CSRF, token, max_age=3600, path="/review", httponly=True, samesite="strict",
                        secure=cookie_secure(request, settings))
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request, settings: SettingsDep) -> Response:
    return _sign_in_page(request, settings, None)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, pool: DbDep, settings: SettingsDep, api_key: Annotated[str, Form(max_length=256)],
                  csrf: Annotated[str, Form(max_length=_MAX_CSRF)]) -> Response:
    if not _csrf_matches(request.cookies.get(_SIGN_IN_CSRF), csrf):
        return _sign_in_page(request, settings, "The form expired; try again.", 401)
    try:
        principal = await principal_for(pool, api_key.strip(), PAGE_ROLES)
    except KeyRefused as refused:
        return _sign_in_page(request, settings, refused.message, 401)
    previous = await review_session(request, pool)
    async with pool.connection() as conn, conn.transaction():  # no session without its audit row
        if previous is not None:  # signing in again ends the session this browser had
            await sessions.revoke(conn, previous.session_hash)
        raw, session = await sessions.create(conn, principal.key_id, settings.review_session_max_age_s)
        await record_audit(conn, principal, "review.sign_in", f"review_sessions/{session.session_hash[:12]}",
                           details={"expires_at": session.expires_at.isoformat()})
        await sessions.delete_ended(conn)
    response = _see_other("/review")
    set_session_cookie(response, raw, request, settings)
    response.delete_cookie(_SIGN_IN_CSRF, path="/review")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, pool: DbDep, settings: SettingsDep,
                   csrf: Annotated[str, Form(max_length=_MAX_CSRF)]) -> Response:
    session = await review_session(request, pool)
    response = _see_other("/review/sign-in")
    if session is None:
        clear_session_cookie(response, request, settings)
        return response
    if not _csrf_matches(session.csrf_token, csrf):
        return _see_other("/review")
    principal = await session_principal(request, pool, PAGE_ROLES)
    async with pool.connection() as conn, conn.transaction():
        if await sessions.revoke(conn, session.session_hash):
            await record_audit(conn, principal, "review.sign_out", f"review_sessions/{session.session_hash[:12]}")
    clear_session_cookie(response, request, settings)
    return response


@router.get("", response_class=HTMLResponse)
async def review_page(request: Request, pool: DbDep, queue: ReviewQueueDep) -> Response:
    signed_in = await _signed_in(request, pool)
    if signed_in is None:
        return _see_other("/review/sign-in")
    principal, page = signed_in
    # `/review?site_id=plant-a` (or camera_id, batch_id, reason) narrows this session's queue; the
    # scope stays until another is given (`/review?scope=all` clears it).
    params = request.query_params
    if "scope" in params or any(f in params for f in SCOPE_FIELDS):
        page.state["scope"] = {f: params[f][:128] for f in SCOPE_FIELDS if params.get(f)}
    task = view = None
    current = page.state.get("current") or await queue.claimed_elsewhere(principal)
    if current:
        view = await queue.held_by(current, principal)
        row = await queue.get(current) if view is not None else None
        if row is None or not principal.allows(row["site_id"], row["camera_id"]):
            page.state.pop("current", None)
            view = None
        else:
            page.state["current"] = current
            task = row
    now = datetime.now(UTC)
    shown_boxes, boxes_left_off = _starting_boxes(task)
    flash = page.state.pop("flash", None)
    await page.save(pool)
    context = {
        "principal": principal,
        "csrf": page.csrf,
        "flash": flash,
        "task": task,
        "view": view,
        "unusable": UNUSABLE,
        "priority_name": PRIORITIES[task["priority"]] if task else None,
        "scope": page.state.get("scope") or {},
        "sla_left": _seconds_until(view.sla_due_at, now) if view else None,
        "detection": task is not None and task.get("boxes") is not None,
        "box_classes": [c for c in task["classes"] if c != NO_DEFECT] if task else [],
        "model_boxes": json.dumps(shown_boxes),
        "shown_boxes": len(shown_boxes),
        "boxes_left_off": boxes_left_off,
        "box_shown_at": BOX_SHOWN_AT,
        "lease_left": _seconds_until(view.claim_expires_at, now) if view else None,
    }
    return templates.TemplateResponse(request, "review.html", context)


# The model's boxes a reviewer starts from: those routing acts on. A box below it is background noise
# (often a second class's weak peak on the same defect); drawn in, it would be confirmed with the rest.
BOX_SHOWN_AT = RoutingRules().box_review_at_or_above


def _starting_boxes(task: dict[str, Any] | None) -> tuple[list[dict[str, Any]], int]:
    """(the model's boxes drawn on the frame, how many below BOX_SHOWN_AT were left off)."""
    boxes = (task or {}).get("boxes") or []
    shown = [b for b in boxes if b.get("score") is None or float(b["score"]) >= BOX_SHOWN_AT]
    return shown, len(boxes) - len(shown)


def _seconds_until(moment: str | None, now: datetime) -> float | None:
    return (datetime.fromisoformat(moment) - now).total_seconds() if moment else None


async def _claim_next(page: PageState, queue: ReviewQueue, principal: Principal) -> None:
    try:
        view = await queue.claim_next(principal, skip=page.state.get("skipped", []), scope=page.state.get("scope"))
    except ReviewRefused as refused:
        page.state.pop("current", None)
        page.flash(refused.message, "error")
        return
    if view is None:
        page.state.pop("current", None)
        page.flash("The queue is empty for you right now.")
        return
    page.state["current"] = view.review_id
    await queue.audit(principal, "review.claim", view.review_id, {"via": "page", "outcome": "claimed"})


@router.post("/next")
async def next_task(request: Request, pool: DbDep, queue: ReviewQueueDep,
                    csrf: Annotated[str, Form(max_length=_MAX_CSRF)]) -> Response:
    """Skip the task in hand (released back to the queue) and claim the next one."""
    signed_in = await _form_session(request, pool, csrf)
    if isinstance(signed_in, RedirectResponse):
        return signed_in
    principal, page = signed_in
    current = page.state.get("current")
    if current:
        with contextlib.suppress(ReviewRefused):  # the claim had lapsed already
            await queue.audited(principal, "review.release", current, {"via": "page"},
                                queue.release(current, principal))
        page.state["skipped"] = [current, *page.state.get("skipped", [])][:_SKIP_MEMORY]
    await _claim_next(page, queue, principal)
    await page.save(pool)
    return _see_other("/review")


@router.post("/decision")
async def decide(request: Request, pool: DbDep, queue: ReviewQueueDep,
                 review_id: Annotated[str, Form(max_length=512)], csrf: Annotated[str, Form(max_length=_MAX_CSRF)],
                 label: Annotated[str, Form(max_length=128)] = "", note: Annotated[str, Form(max_length=2000)] = "",
                 boxes: Annotated[str, Form(max_length=_MAX_BOXES_FORM)] = "") -> Response:
    signed_in = await _form_session(request, pool, csrf)
    if isinstance(signed_in, RedirectResponse):
        return signed_in
    principal, page = signed_in
    box_set = None
    if boxes and label != UNUSABLE:  # a detection task's set, as review_boxes.js writes it
        try:
            box_set = json.loads(boxes)
        except ValueError:
            box_set = "unreadable"  # refused by the queue's check, naming the field
    details = {"via": "page", "label": label, "note": note or None, **({"boxes": box_set} if box_set else {})}
    try:
        view = await queue.audited(principal, "review.decision", review_id, details,
                                   queue.decide(review_id, principal, label, note or None, box_set))
    except ReviewRefused as refused:
        page.flash(f"Not saved: {refused.message}", "error")
        await page.save(pool)
        return _see_other("/review")
    observe_decision(view)
    saved = f"{len(box_set)} boxes" if isinstance(box_set, list) else repr(label)
    page.flash(f"Saved {saved} for {review_id}.")
    await _claim_next(page, queue, principal)
    await page.save(pool)
    return _see_other("/review")
