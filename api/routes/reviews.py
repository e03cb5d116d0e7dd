"""Human review: the queue, claim / decision / release on a task, the frame under review, and metrics.
For reviewer, ml-engineer and admin keys. Every mutating call is audited, refused ones included."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import RedirectResponse

from api.callers import Reviewer, ReviewWatcher
from api.deps import DbDep, ReviewQueueDep, SettingsDep, StoreDep
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
    return HTTPException(refused.kind.http_status, {"error": str(refused.kind), "message": refused.message})


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
    rows = await queue.listing(QueueFilters(status, camera_id, site_id, batch_id, reason, escalated, limit, offset))
    return ReviewList(tasks=[task_model(r, settings) for r in rows], count=len(rows))


@router.get("/metrics", response_model=ReviewMetrics,
            summary="Review latency (p50/p95), correction rate, tasks pending and escalated")
async def get_review_metrics(
    caller: ReviewWatcher, pool: DbDep,
    window_hours: Annotated[float, Query(gt=0, le=24 * 90, description="decisions within this window")] = 24.0,
) -> ReviewMetrics:
    return ReviewMetrics(**await review_metrics(pool, window_hours))


@router.post("/next", response_model=ReviewAction, responses={204: {"description": "nothing to review"}},
             summary="Claim the most urgent task you may take (never one another reviewer holds)")
async def claim_next(caller: Reviewer, queue: ReviewQueueDep, settings: SettingsDep, body: ClaimBody | None = None,
                     camera_id: str | None = None, site_id: str | None = None, batch_id: str | None = None,
                     reason: Annotated[str | None, _REASON] = None) -> Any:
    given = {"camera_id": camera_id, "site_id": site_id, "batch_id": batch_id, "reason": reason}
    scope = {field: value for field in SCOPE_FIELDS if (value := given[field])}
    view = await queue.claim_next(caller, lease_seconds=body.lease_seconds if body else None, scope=scope)
    if view is None:
        return Response(status_code=204)
    await queue.audit(caller, "review.claim", view.review_id, {"via": "next", "outcome": "claimed"})
    row = await queue.get(view.review_id)
    return action_model(view, task_model(row, settings) if row else None)


@router.get("/{task_id}", response_model=ReviewTask, responses={404: _REFUSALS[404]})
async def get_review(task_id: str, caller: Reviewer, queue: ReviewQueueDep, settings: SettingsDep) -> Any:
    row = await queue.get(task_id)
    if row is None:
        raise HTTPException(404, f"no review task {task_id!r}")
    return task_model(row, settings)


@router.get("/{task_id}/frame", response_class=Response, responses={404: _REFUSALS[404]},
            summary="The frame under review (a redirect to a presigned URL where the store has one)")
async def get_frame(task_id: str, caller: Reviewer, queue: ReviewQueueDep, store: StoreDep) -> Response:
    row = await queue.get(task_id)
    if row is None:
        raise HTTPException(404, f"no review task {task_id!r}")
    url = await asyncio.to_thread(store.url, row["object_key"], timedelta(minutes=15))
    if url:
        return RedirectResponse(url, status_code=307)
    try:
        data = await asyncio.to_thread(store.get, row["object_key"])
    except ObjectNotFoundError:
        raise HTTPException(404, f"the frame of {task_id!r} is gone from the object store") from None
    return Response(data, media_type=sniff_image_type(data), headers={"Cache-Control": "private, max-age=300"})


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
             responses={**_REFUSALS, 422: {"description": "a label outside the task's classes"}})
async def decision(task_id: str, body: DecisionBody, caller: Reviewer, queue: ReviewQueueDep) -> Any:
    try:
        view = await queue.audited(caller, "review.decision", task_id, {"label": body.label, "note": body.note},
                                   queue.decide(task_id, caller, body.label, body.note))
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
