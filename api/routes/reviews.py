"""Human review: the queue, claim / decision / release on a task, the frame under review, and metrics.
For reviewer, ml-engineer and admin keys. Every mutating call is audited, refused ones included.
A key scoped to sites or cameras sees and acts on the tasks there only (403 with the reason otherwise)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from api.callers import Reviewer, ReviewerOrSession, ReviewWatcher
from api.deps import DbDep, ReviewQueueDep, SettingsDep, StoreDep
from api.image_urls import IMAGE_HEADERS
from api.review_metrics import observe_decision, review_metrics
from api.schemas.reviews import ClaimBody, DecisionBody, ReviewAction, ReviewList, ReviewMetrics, ReviewTask
from api.services.review_queue import QueueFilters, ReviewRefused
from infra.db import Row
from infra.settings import Settings
from infra.store import ObjectNotFoundError
from infra.tables.review_tasks import SCOPE_FIELDS
from vision.formats import sniff_image_type
from workflows.failures import ReviewRefusal
from workflows.review_types import REASONS, ReviewTaskView

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])

_REFUSALS: dict[int | str, dict[str, Any]] = {
    409: {"description": "refused by the task: " + ", ".join(
        str(r) for r in ReviewRefusal if r.http_status == 409)},
    404: {"description": "no such review task"},
    403: {"description": "the task is outside the key's site or camera scope"},
}
_REASON = Query(pattern=f"^({'|'.join(REASONS)})$")


def task_model(row: Row, settings: Settings) -> Any:
    return ReviewTask.model_validate({
        **row, "decisions_count": len(row["decided_by"] or []),
        "frame_url": f"/v1/reviews/{row['review_id']}/frame",
        "temporal_ui_url": settings.workflow_ui_url(row["review_id"]),
    })


def action_model(view: ReviewTaskView, task: Any = None) -> Any:
    return ReviewAction.model_validate(view).model_copy(update={"task": task})


def _refused(refused: ReviewRefused) -> HTTPException:
    retry = {"Retry-After": "1"} if refused.kind.http_status == 503 else None
    detail = {"error": str(refused.kind), "message": refused.message}
    if refused.field:
        detail["field"] = refused.field
    return HTTPException(refused.kind.http_status, detail, headers=retry)


@router.get("", response_model=ReviewList, summary="The review queue: pending first, by priority, then age")
async def list_reviews(
    caller: Reviewer, queue: ReviewQueueDep, settings: SettingsDep,
    status: Annotated[str, Query(pattern="^(open|pending|claimed|decided)$",
                                 description="open = pending and claimed")] = "open",
    camera_id: str | None = None, site_id: str | None = None, batch_id: str | None = None,
    reason: Annotated[str | None, _REASON] = None,
    escalated: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ReviewList:
    rows = await queue.listing(QueueFilters(status, camera_id, site_id, batch_id, reason, escalated, limit, offset),
                               caller)
    return ReviewList(tasks=[task_model(r, settings) for r in rows], count=len(rows))


async def _visible(queue: Any, task_id: str, caller: Any) -> Row:
    try:
        row: Row | None = await queue.visible(task_id, caller)
    except ReviewRefused as refused:
        raise _refused(refused) from None
    if row is None:
        raise HTTPException(404, f"no review task {task_id!r}")
    return row


@router.get("/metrics", response_model=ReviewMetrics,
            summary="Review latency (p50/p95), correction rate, tasks pending and escalated",
            responses={403: {"description": "a key scoped to sites or cameras: these figures span every site"}})
async def get_review_metrics(
    caller: ReviewWatcher, pool: DbDep,
    window_hours: Annotated[float, Query(gt=0, le=24 * 90, description="decisions within this window")] = 24.0,
) -> ReviewMetrics:
    if caller.scoped:
        raise HTTPException(403, f"key {caller.key_id!r} is limited to some sites or cameras; review metrics span"
                                 " every site: use an unscoped key")
    return ReviewMetrics(**await review_metrics(pool, window_hours))


@router.post("/next", response_model=ReviewAction,
             responses={204: {"description": "nothing to review"},
                        409: {"description": "you hold as many claims as one reviewer may"},
                        503: {"description": "no task could be claimed within a few seconds; retry"}},
             summary="Claim the most urgent task you may take (never one another reviewer holds)")
async def claim_next(caller: Reviewer, queue: ReviewQueueDep, settings: SettingsDep, body: ClaimBody | None = None,
                     camera_id: str | None = None, site_id: str | None = None, batch_id: str | None = None,
                     reason: Annotated[str | None, _REASON] = None) -> Any:
    given = {"camera_id": camera_id, "site_id": site_id, "batch_id": batch_id, "reason": reason}
    scope = {field: value for field in SCOPE_FIELDS if (value := given[field])}
    try:
        view = await queue.claim_next(caller, lease_seconds=body.lease_seconds if body else None, scope=scope)
    except ReviewRefused as refused:
        await queue.audit(caller, "review.claim", "next", {"via": "next", "outcome": "refused",
                                                           "refusal": str(refused.kind)})
        raise _refused(refused) from None
    if view is None:
        return Response(status_code=204)
    await queue.audit(caller, "review.claim", view.review_id, {"via": "next", "outcome": "claimed"})
    row = await queue.get(view.review_id)
    return action_model(view, task_model(row, settings) if row else None)


@router.get("/{task_id}", response_model=ReviewTask, responses={404: _REFUSALS[404], 403: _REFUSALS[403]})
async def get_review(task_id: str, caller: Reviewer, queue: ReviewQueueDep, settings: SettingsDep) -> Any:
    return task_model(await _visible(queue, task_id, caller), settings)


@router.get("/{task_id}/frame", response_class=Response, responses={404: _REFUSALS[404], 403: _REFUSALS[403]},
            summary="The frame under review; the reviewer page's session cookie is accepted here")
async def get_frame(task_id: str, caller: ReviewerOrSession, queue: ReviewQueueDep, store: StoreDep) -> Response:
    # Served by the API, never a redirect to the store: in production the object store is not
    # reachable from outside, and reviewers' browsers need no credentials of its own.
    row = await _visible(queue, task_id, caller)
    try:
        data = await asyncio.to_thread(store.get, row["object_key"])
    except ObjectNotFoundError:
        raise HTTPException(404, f"the frame of {task_id!r} is gone from the object store") from None
    return Response(data, media_type=sniff_image_type(data),
                    headers={**IMAGE_HEADERS, "Cache-Control": "private, max-age=300"})


@router.post("/{task_id}/claim", response_model=ReviewAction, responses=_REFUSALS)
async def claim(task_id: str, caller: Reviewer, queue: ReviewQueueDep, settings: SettingsDep,
                body: ClaimBody | None = None) -> Any:
    lease = body.lease_seconds if body else None
    try:
        view = await queue.audited(caller, "review.claim", task_id, {"lease_seconds": lease},
                                   queue.claim(task_id, caller, lease))
    except ReviewRefused as refused:
        raise _refused(refused) from None
    row = await queue.get(task_id)
    return action_model(view, task_model(row, settings) if row else None)


@router.post("/{task_id}/decision", response_model=ReviewAction,
             responses={**_REFUSALS, 422: {"description": "a label outside the task's classes, or a box outside"
                                                          " the frame or without a class (`field` names it)"}})
async def decision(task_id: str, body: DecisionBody, caller: Reviewer, queue: ReviewQueueDep) -> Any:
    details = {"label": body.label, "note": body.note, **({"boxes": body.boxes} if body.boxes is not None else {})}
    try:
        view = await queue.audited(caller, "review.decision", task_id, details,
                                   queue.decide(task_id, caller, body.label, body.note, body.boxes))
    except ReviewRefused as refused:
        raise _refused(refused) from None
    observe_decision(view)
    return action_model(view)


@router.post("/{task_id}/release", response_model=ReviewAction, responses=_REFUSALS)
async def release(task_id: str, caller: Reviewer, queue: ReviewQueueDep) -> Any:
    try:
        view = await queue.audited(caller, "review.release", task_id, {}, queue.release(task_id, caller))
    except ReviewRefused as refused:
        raise _refused(refused) from None
    return action_model(view)
