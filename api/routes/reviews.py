"""Human review: the queue, claim / decision / release on a task, the frame under review, and metrics.
For reviewer, ml-engineer and admin keys. Every mutating call is audited, refused ones included."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import RedirectResponse

from api import review_queue
from api.audit import record_audit
from api.auth import Principal, require_roles
from api.deps import DbDep, SettingsDep, StoreDep, TemporalDep
from api.review_metrics import observe_decision, review_metrics
from api.review_queue import QueueFilters, ReviewRefused
from api.schemas.reviews import (
    ClaimBody,
    DecisionBody,
    ReviewAction,
    ReviewList,
    ReviewMetrics,
    ReviewTask,
)
from infra.settings import Settings
from infra.store import ObjectNotFoundError
from workflows.review_types import ReviewTaskView

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])
Reviewer = Annotated[Principal, Depends(require_roles("reviewer", "ml-engineer"))]
# Ops watch the queue's health too; they do not review.
MetricsReader = Annotated[Principal, Depends(require_roles("reviewer", "ml-engineer", "ops"))]

_REFUSALS = {409: {"description": "refused by the task: claimed by someone else, not your claim, already "
                                  "reviewed by you, or already decided"},
             404: {"description": "no such review task"}}


def task_model(row: dict, settings: Settings) -> ReviewTask:
    return ReviewTask(
        **{k: v for k, v in row.items() if k in ReviewTask.model_fields},
        decisions_count=len(row["decided_by"] or []),
        frame_url=f"/v1/reviews/{row['review_id']}/frame",
        temporal_ui_url=f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/"
                        f"{row['review_id']}",
    )


def action_model(view: ReviewTaskView, task: ReviewTask | None = None) -> ReviewAction:
    return ReviewAction(
        review_id=view.review_id, status=view.status, stage=view.stage, priority=view.priority,
        escalated=view.escalated, claimed_by=view.claimed_by, claim_expires_at=view.claim_expires_at,
        sla_due_at=view.sla_due_at, decisions_count=view.decisions_count, reviews_required=view.reviews_required,
        final_label=view.final_label, task=task,
    )


async def audit(pool, principal: Principal, action: str, review_id: str, details: dict) -> None:
    async with pool.connection() as conn:
        await record_audit(conn, principal, action, f"reviews/{review_id}", workflow_id=review_id, details=details)


@router.get("", response_model=ReviewList, summary="The review queue: pending first, by priority, then age")
async def list_reviews(
    caller: Reviewer, pool: DbDep, settings: SettingsDep,
    status: Annotated[str, Query(pattern="^(open|pending|claimed|decided)$",
                                 description="open = pending and claimed")] = "open",
    camera_id: str | None = None, site_id: str | None = None, batch_id: str | None = None,
    reason: Annotated[str | None, Query(pattern="^(low_confidence|qa_sample)$")] = None,
    escalated: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ReviewList:
    rows = await review_queue.list_reviews(
        pool, QueueFilters(status, camera_id, site_id, batch_id, reason, escalated, limit, offset)
    )
    return ReviewList(tasks=[task_model(r, settings) for r in rows], count=len(rows))


@router.get("/metrics", response_model=ReviewMetrics,
            summary="Review latency (p50/p95), correction rate, tasks pending and escalated")
async def get_review_metrics(
    caller: MetricsReader, pool: DbDep,
    window_hours: Annotated[float, Query(gt=0, le=24 * 90, description="decisions within this window")] = 24.0,
) -> ReviewMetrics:
    return ReviewMetrics(**await review_metrics(pool, window_hours))


@router.post("/next", response_model=ReviewAction, responses={204: {"description": "nothing to review"}},
             summary="Claim the most urgent task you may take (never one another reviewer holds)")
async def claim_next(caller: Reviewer, pool: DbDep, temporal: TemporalDep, settings: SettingsDep,
                     body: ClaimBody | None = None,
                     camera_id: str | None = None, site_id: str | None = None, batch_id: str | None = None,
                     reason: Annotated[str | None, Query(pattern="^(low_confidence|qa_sample)$")] = None):
    scope = {"camera_id": camera_id, "site_id": site_id, "batch_id": batch_id, "reason": reason}
    view = await review_queue.claim_next(pool, temporal, caller, lease_seconds=body.lease_seconds if body else None,
                                         scope={k: v for k, v in scope.items() if v})
    if view is None:
        return Response(status_code=204)
    await audit(pool, caller, "review.claim", view.review_id, {"via": "next", "outcome": "claimed"})
    row = await review_queue.get_review(pool, view.review_id)
    return action_model(view, task_model(row, settings) if row else None)


@router.get("/{task_id}", response_model=ReviewTask, responses={404: _REFUSALS[404]})
async def get_review(task_id: str, caller: Reviewer, pool: DbDep, settings: SettingsDep) -> ReviewTask:
    row = await review_queue.get_review(pool, task_id)
    if row is None:
        raise HTTPException(404, f"no review task {task_id!r}")
    return task_model(row, settings)


@router.get("/{task_id}/frame", response_class=Response, responses={404: _REFUSALS[404]},
            summary="The frame under review (a redirect to a presigned URL where the store has one)")
async def get_frame(task_id: str, caller: Reviewer, pool: DbDep, store: StoreDep) -> Response:
    row = await review_queue.get_review(pool, task_id)
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


def sniff_image_type(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


async def _act(pool, caller: Principal, action: str, review_id: str, details: dict, call):
    try:
        view = await call
    except ReviewRefused as refused:
        await audit(pool, caller, action, review_id, {**details, "outcome": "refused", "refusal": refused.kind})
        raise HTTPException(refused.status, {"error": refused.kind, "message": refused.message}) from None
    await audit(pool, caller, action, review_id, {**details, "outcome": view.status})
    return view


@router.post("/{task_id}/claim", response_model=ReviewAction, responses=_REFUSALS)
async def claim(task_id: str, caller: Reviewer, pool: DbDep, temporal: TemporalDep, settings: SettingsDep,
                body: ClaimBody | None = None) -> ReviewAction:
    lease = body.lease_seconds if body else None
    view = await _act(pool, caller, "review.claim", task_id, {"lease_seconds": lease},
                      review_queue.claim(pool, temporal, task_id, caller, lease))
    row = await review_queue.get_review(pool, task_id)
    return action_model(view, task_model(row, settings) if row else None)


@router.post("/{task_id}/decision", response_model=ReviewAction,
             responses={**_REFUSALS, 422: {"description": "a label outside the task's classes"}})
async def decision(task_id: str, body: DecisionBody, caller: Reviewer, pool: DbDep,
                   temporal: TemporalDep) -> ReviewAction:
    view = await _act(pool, caller, "review.decision", task_id, {"label": body.label, "note": body.note},
                      review_queue.decide(pool, temporal, task_id, caller, body.label, body.note))
    observe_decision(view)
    return action_model(view)


@router.post("/{task_id}/release", response_model=ReviewAction, responses=_REFUSALS)
async def release(task_id: str, caller: Reviewer, pool: DbDep, temporal: TemporalDep) -> ReviewAction:
    view = await _act(pool, caller, "review.release", task_id, {},
                      review_queue.release(pool, temporal, task_id, caller))
    return action_model(view)
