"""The review queue as the API and the reviewer page use it: listing from the Postgres projection, and
claim / decide / release through the task's workflow, which is the authority.

"Next task" must never hand two reviewers the same task: a candidate is taken from the projection
with FOR UPDATE SKIP LOCKED and reserved for a few seconds (so a concurrent request skips it), then
confirmed through the workflow's claim Update; a refused claim moves on to the next candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from infra.api_keys import Principal
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import (
    ERR_ALREADY_REVIEWED,
    ERR_CLAIM_HELD,
    ERR_DECIDED,
    ERR_INVALID_LABEL,
    ERR_INVALID_REQUEST,
    ERR_NOT_CLAIM_HOLDER,
    ERR_OPENING,
    ClaimRequest,
    DecisionRequest,
    ReleaseRequest,
    ReviewTaskView,
)

# How long a "next task" pick keeps other pickers off a candidate while its claim is confirmed; it
# also covers the moment until the workflow's own projection write shows the claim.
RESERVATION_SECONDS = 15
MAX_CANDIDATES = 20
# A task whose workflow does not answer in this time (its workers are down) is skipped by "next";
# a direct call answers 503. The Update may still land later; its lease then lapses on its own.
UPDATE_TIMEOUT_SECONDS = 10.0
SCOPE_FIELDS = ("camera_id", "site_id", "batch_id", "reason")

_HTTP_STATUS = {
    ERR_CLAIM_HELD: 409, ERR_NOT_CLAIM_HOLDER: 409, ERR_ALREADY_REVIEWED: 409, ERR_DECIDED: 409,
    ERR_OPENING: 409, ERR_INVALID_LABEL: 422, ERR_INVALID_REQUEST: 422,
}


@dataclass
class ReviewRefused(Exception):
    """The workflow (or the queue) said no; `status` is the HTTP status that says why."""

    status: int
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class QueueFilters:
    status: str | None = None        # pending, claimed, decided, open (pending + claimed; the default)
    camera_id: str | None = None
    site_id: str | None = None
    batch_id: str | None = None
    reason: str | None = None
    escalated: bool | None = None
    limit: int = 50
    offset: int = 0


async def list_reviews(pool, filters: QueueFilters) -> list[dict]:
    """Pending first, then claimed, then decided; within each, highest priority, then oldest."""
    where, params = [], []
    status = filters.status or "open"
    if status == "open":
        where.append("status <> 'decided'")
    else:
        where.append("status = %s")
        params.append(status)
    for column in ("camera_id", "site_id", "batch_id", "reason"):
        value = getattr(filters, column)
        if value:
            where.append(f"{column} = %s")
            params.append(value)
    if filters.escalated is not None:
        where.append("escalated = %s")
        params.append(filters.escalated)
    sql = (
        "SELECT * FROM review_tasks WHERE " + " AND ".join(where)
        + " ORDER BY CASE status WHEN 'pending' THEN 0 WHEN 'claimed' THEN 1 ELSE 2 END,"
        " priority DESC, created_at, review_id LIMIT %s OFFSET %s"
    )
    async with pool.connection() as conn:
        cur = await conn.execute(sql, (*params, filters.limit, filters.offset))
        return await cur.fetchall()


async def get_review(pool, review_id: str) -> dict | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM review_tasks WHERE review_id = %s", (review_id,))
        return await cur.fetchone()


async def _update(pool, temporal: Client, review_id: str, update, arg) -> ReviewTaskView:
    handle = temporal.get_workflow_handle(review_id)
    try:
        return await handle.execute_update(update, arg, rpc_timeout=timedelta(seconds=UPDATE_TIMEOUT_SECONDS))
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        message = f"task {review_id} did not answer within {UPDATE_TIMEOUT_SECONDS:.0f}s; try again"
        raise ReviewRefused(503, "TaskUnavailable", message) from None
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise await _refusal(pool, review_id, exc) from None


async def _refusal(pool, review_id: str, exc: Exception) -> ReviewRefused:
    if isinstance(exc, WorkflowUpdateFailedError):
        kind = getattr(exc.cause, "type", None) or "Refused"
        message = getattr(exc.cause, "message", None) or str(exc.cause)
        return ReviewRefused(_HTTP_STATUS.get(kind, 409), kind, message)
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        row = await get_review(pool, review_id)
        if row is not None:  # the workflow is closed: decided
            return ReviewRefused(409, ERR_DECIDED, f"task {review_id} is already decided")
        return ReviewRefused(404, "NotFound", f"no review task {review_id!r}")
    raise exc


async def claim(pool, temporal: Client, review_id: str, principal: Principal,
                lease_seconds: float | None = None) -> ReviewTaskView:
    return await _update(pool, temporal, review_id, ReviewTaskWorkflow.claim,
                         ClaimRequest(principal.key_id, principal.name, lease_seconds))


async def decide(pool, temporal: Client, review_id: str, principal: Principal, label: str,
                 note: str | None = None) -> ReviewTaskView:
    return await _update(pool, temporal, review_id, ReviewTaskWorkflow.decide,
                         DecisionRequest(principal.key_id, label, principal.name, note))


async def release(pool, temporal: Client, review_id: str, principal: Principal) -> ReviewTaskView:
    view = await _update(pool, temporal, review_id, ReviewTaskWorkflow.release, ReleaseRequest(principal.key_id))
    async with pool.connection() as conn:  # let the next picker have it at once
        await conn.execute("UPDATE review_tasks SET reserved_until = NULL WHERE review_id = %s AND reserved_by = %s",
                           (review_id, principal.key_id))
    return view


async def held_by(pool, temporal: Client, review_id: str, principal: Principal) -> ReviewTaskView | None:
    """The task's state when this principal holds an unexpired claim on it right now, else None."""
    try:
        view = await temporal.get_workflow_handle(review_id).query(ReviewTaskWorkflow.state,
                                                                   rpc_timeout=timedelta(seconds=5))
    except RPCError:
        return None
    except Exception:  # a closed or failed workflow answers queries with an error of its own
        return None
    return view if view.status == "claimed" and view.claimed_by == principal.key_id else None


async def _reserve_candidate(pool, principal: Principal, skip: list[str], scope: dict[str, str]) -> str | None:
    scoped = "".join(f" AND {field} = %({field})s" for field in SCOPE_FIELDS if scope.get(field))
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            UPDATE review_tasks SET reserved_by = %(me)s,
                   reserved_until = clock_timestamp() + make_interval(secs => %(hold)s)
             WHERE review_id = (
                   SELECT review_id FROM review_tasks
                    WHERE status <> 'decided'
                      AND (status = 'pending' OR claim_expires_at < now())
                      AND NOT (%(me)s = ANY (decided_by))
                      AND (reserved_until IS NULL OR reserved_until < clock_timestamp())
                      AND review_id <> ALL (%(skip)s)""" + scoped + """
                    ORDER BY priority DESC, created_at, review_id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
            RETURNING review_id
            """,
            {"me": principal.key_id, "hold": RESERVATION_SECONDS, "skip": list(skip),
             **{field: scope.get(field) for field in SCOPE_FIELDS}},
        )
        row = await cur.fetchone()
    return row["review_id"] if row else None


async def claim_next(pool, temporal: Client, principal: Principal, skip: list[str] | tuple = (),
                     lease_seconds: float | None = None, scope: dict[str, str] | None = None) -> ReviewTaskView | None:
    """Claim the most urgent task this reviewer may take, within an optional scope (camera, site, batch,
    reason); None when the queue has none for them."""
    tried = list(skip)
    for _ in range(MAX_CANDIDATES):
        review_id = await _reserve_candidate(pool, principal, tried, scope or {})
        if review_id is None:
            return None
        try:
            return await claim(pool, temporal, review_id, principal, lease_seconds)
        except ReviewRefused:
            tried.append(review_id)  # someone else got there first, or it just closed: next one
    return None


def seconds_until(moment: datetime | str | None, now: datetime) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return (moment - now).total_seconds()
