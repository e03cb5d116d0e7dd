"""The review queue as the API and the reviewer page use it: listing from the Postgres projection, and
claim / decide / release through the task's workflow, which is the authority.

"Next task" must never hand two reviewers the same task: a candidate is taken from the projection
with FOR UPDATE SKIP LOCKED and reserved for a few seconds (so a concurrent request skips it), then
confirmed through the workflow's claim Update; a refused claim moves on to the next candidate. The
whole search is bounded in time (`review_next_timeout_s`): past it the caller is told to retry.

Every action checks the caller's key scope against the task's site and camera, leases are capped
(`review_max_lease_seconds`) and a reviewer holds at most `review_max_claims_per_reviewer` claims.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from api.audit import record_audit
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.tables import review_tasks
from infra.tables.api_keys import Principal
from infra.tables.review_tasks import QueueFilters
from vision.boxes import BoxError
from workflows.failures import ReviewRefusal
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import (
    UNUSABLE,
    ClaimRequest,
    DecisionRequest,
    ReleaseRequest,
    ReviewStatus,
    ReviewTaskView,
    checked_boxes,
)

# How long a "next task" pick keeps other pickers off a candidate while its claim is confirmed; it
# also covers the moment until the workflow's own projection write shows the claim.
RESERVATION_SECONDS = 15
MAX_CANDIDATES = 20
# A task whose workflow does not answer in this time (its workers are down) is skipped by "next";
# a direct call answers 503. The Update may still land later; its lease then lapses on its own.
UPDATE_TIMEOUT_SECONDS = 10.0

__all__ = ["QueueFilters", "ReviewQueue", "ReviewRefused"]


@dataclass
class ReviewRefused(Exception):
    """The workflow (or the queue) said no; `kind.http_status` is the HTTP status that says why."""

    kind: ReviewRefusal
    message: str
    field: str | None = None  # the input field at fault, for a 422 that points at it (`boxes[1].x1`)

    def __str__(self) -> str:
        return self.message


class ReviewQueue:
    def __init__(self, pool: DbPool, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.temporal = temporal
        self.settings = settings

    async def listing(self, filters: QueueFilters, principal: Principal | None = None) -> list[Row]:
        """The queue as this principal may see it: only tasks within its key's scope."""
        if principal is not None:
            filters = replace(filters, allowed_sites=principal.site_ids, allowed_cameras=principal.camera_ids)
        async with self.pool.connection() as conn:
            return await review_tasks.listing(conn, filters)

    async def get(self, review_id: str) -> Row | None:
        async with self.pool.connection() as conn:
            return await review_tasks.get(conn, review_id)

    async def visible(self, review_id: str, principal: Principal) -> Row | None:
        """The task's row when it exists and the key's scope covers its site and camera; None otherwise:
        another site's task reads as absent, so a key of one site learns nothing of another's."""
        row = await self.get(review_id)
        return row if row is not None and principal.allows(row["site_id"], row["camera_id"]) else None

    async def _check_action(self, review_id: str, principal: Principal) -> None:
        """A scoped key acts only on tasks the projection shows within its scope; any other (another
        site's, or one not listed yet, which cannot be shown to be inside it) is not found."""
        if principal.scoped and await self.visible(review_id, principal) is None:
            raise ReviewRefused(ReviewRefusal.NOT_FOUND, f"no review task {review_id!r}")

    async def audit(self, principal: Principal, action: str, review_id: str, details: Mapping[str, Any]) -> None:
        """Every reviewer action is on the record, refused ones included."""
        async with self.pool.connection() as conn:
            await record_audit(conn, principal, action, f"reviews/{review_id}", workflow_id=review_id,
                               details=dict(details))

    async def audited(self, principal: Principal, action: str, review_id: str, details: Mapping[str, Any],
                      call: Awaitable[ReviewTaskView]) -> ReviewTaskView:
        """Run a reviewer action and record it with its outcome, the refusal's kind when refused."""
        try:
            view = await call
        except ReviewRefused as refused:
            await self.audit(principal, action, review_id,
                             {**details, "outcome": "refused", "refusal": str(refused.kind)})
            raise
        await self.audit(principal, action, review_id, {**details, "outcome": view.status})
        return view

    async def _update(self, review_id: str, update: Any, arg: object,
                      timeout_s: float = UPDATE_TIMEOUT_SECONDS) -> ReviewTaskView:
        handle = self.temporal.get_workflow_handle(review_id)
        timeout_s = min(timeout_s, UPDATE_TIMEOUT_SECONDS)
        try:
            view: ReviewTaskView = await asyncio.wait_for(
                handle.execute_update(update, arg, rpc_timeout=timedelta(seconds=timeout_s)), timeout_s + 1)
        except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError):
            raise ReviewRefused(ReviewRefusal.UNAVAILABLE, f"task {review_id} did not answer within "
                                f"{timeout_s:g}s; try again") from None
        except (WorkflowUpdateFailedError, RPCError) as exc:
            raise await self._refusal(review_id, exc) from None
        return view

    async def _refusal(self, review_id: str, exc: Exception) -> ReviewRefused:
        if isinstance(exc, WorkflowUpdateFailedError):
            kind = ReviewRefusal.of(getattr(exc.cause, "type", None))
            message = getattr(exc.cause, "message", None) or str(exc.cause)
            return ReviewRefused(kind if isinstance(kind, ReviewRefusal) else ReviewRefusal.INVALID_REQUEST, message)
        if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
            if await self.get(review_id) is not None:  # the workflow is closed: decided
                return ReviewRefused(ReviewRefusal.DECIDED, f"task {review_id} is already decided")
            return ReviewRefused(ReviewRefusal.NOT_FOUND, f"no review task {review_id!r}")
        raise exc

    def _check_lease(self, lease_seconds: float | None) -> None:
        cap = self.settings.review_max_lease_seconds
        if lease_seconds is not None and lease_seconds > cap:
            raise ReviewRefused(ReviewRefusal.LEASE_TOO_LONG, f"lease_seconds may be at most {cap:.0f}")

    async def _check_claim_limit(self, principal: Principal, review_id: str | None = None) -> None:
        """At most `review_max_claims_per_reviewer` unexpired claims at once (renewing one held is fine)."""
        limit = self.settings.review_max_claims_per_reviewer
        async with self.pool.connection() as conn:
            held = await review_tasks.claims_held(conn, principal.key_id, besides=review_id)
        if held >= limit:
            raise ReviewRefused(ReviewRefusal.CLAIM_LIMIT, f"you hold {held} claims, the most one reviewer may;"
                                " decide or release one first")

    async def claim(self, review_id: str, principal: Principal, lease_seconds: float | None = None,
                    timeout_s: float = UPDATE_TIMEOUT_SECONDS) -> ReviewTaskView:
        self._check_lease(lease_seconds)
        await self._check_action(review_id, principal)
        await self._check_claim_limit(principal, review_id)
        return await self._update(review_id, ReviewTaskWorkflow.claim,
                                  ClaimRequest(principal.key_id, principal.name, lease_seconds), timeout_s)

    async def decide(self, review_id: str, principal: Principal, label: str, note: str | None = None,
                     boxes: Any = None) -> ReviewTaskView:
        """A class decision, or a detection task's box set (checked here first, so a bad box is a 422
        naming its field before the workflow is asked; the workflow checks again, and decides)."""
        await self._check_action(review_id, principal)
        if boxes is not None and label != UNUSABLE:
            boxes = await self._checked_boxes(review_id, boxes)
        elif label == UNUSABLE:
            boxes = None
        return await self._update(review_id, ReviewTaskWorkflow.decide,
                                  DecisionRequest(principal.key_id, label, principal.name, note, boxes))

    async def _checked_boxes(self, review_id: str, boxes: Any) -> list[dict[str, Any]]:
        row = await self.get(review_id)
        if row is None:
            raise ReviewRefused(ReviewRefusal.NOT_FOUND, f"no review task {review_id!r}")
        if row.get("boxes") is None:
            raise ReviewRefused(ReviewRefusal.INVALID_REQUEST, f"task {review_id} is a classification task:"
                                " decide it with a label, not boxes", "boxes")
        try:
            return checked_boxes(boxes, list(row["classes"]))
        except BoxError as exc:
            raise ReviewRefused(ReviewRefusal.INVALID_LABEL, str(exc), exc.field) from None

    async def release(self, review_id: str, principal: Principal) -> ReviewTaskView:
        await self._check_action(review_id, principal)
        view = await self._update(review_id, ReviewTaskWorkflow.release, ReleaseRequest(principal.key_id))
        async with self.pool.connection() as conn:  # let the next picker have it at once
            await review_tasks.release_reservation(conn, review_id, principal.key_id)
        return view

    async def held_by(self, review_id: str, principal: Principal) -> ReviewTaskView | None:
        """The task's state when this principal holds an unexpired claim on it right now, else None."""
        try:
            view = await self.temporal.get_workflow_handle(review_id).query(
                ReviewTaskWorkflow.state, rpc_timeout=timedelta(seconds=5))
        except Exception:  # unreachable, or a closed or failed workflow answering with an error of its own
            return None
        return view if view.status == ReviewStatus.CLAIMED and view.claimed_by == principal.key_id else None

    async def claimed_elsewhere(self, principal: Principal) -> str | None:
        """A task this reviewer still holds from another session (a restarted browser): resume it."""
        async with self.pool.connection() as conn:
            return await review_tasks.claimed_by(conn, principal.key_id)

    async def claim_next(self, principal: Principal, skip: Sequence[str] = (), lease_seconds: float | None = None,
                         scope: Mapping[str, str] | None = None) -> ReviewTaskView | None:
        """Claim the most urgent task this reviewer may take, within an optional scope (camera, site,
        batch, reason) and their key's scope; None when the queue has none for them. ReviewRefused
        (UNAVAILABLE) when no candidate could be claimed within `review_next_timeout_s`."""
        self._check_lease(lease_seconds)
        await self._check_claim_limit(principal)
        deadline = time.monotonic() + self.settings.review_next_timeout_s
        tried = list(skip)
        for _ in range(MAX_CANDIDATES):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            async with self.pool.connection() as conn:
                review_id = await review_tasks.reserve_next(
                    conn, principal.key_id, hold_seconds=RESERVATION_SECONDS, skip=tried, scope=scope or {},
                    allowed_sites=principal.site_ids, allowed_cameras=principal.camera_ids)
            if review_id is None:
                return None
            try:
                return await self.claim(review_id, principal, lease_seconds, timeout_s=max(left, 0.5))
            except ReviewRefused as refused:
                if refused.kind == ReviewRefusal.CLAIM_LIMIT:
                    raise
                tried.append(review_id)  # someone else got there first, it just closed, or it hung: next one
        raise ReviewRefused(ReviewRefusal.UNAVAILABLE, f"no task could be claimed within "
                            f"{self.settings.review_next_timeout_s:g}s; try again")
