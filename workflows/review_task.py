"""ReviewTaskWorkflow: one durable review task per frame sent to human review.

States: pending -> claimed -> decided. A claim is a lease: when it runs out the task returns to the
queue on its own. An SLA timer runs from creation; when it passes the task escalates (priority up, an
`escalated` flag in the queue, an escalation record and its notification hook) and stays reviewable.
With `reviews_required=2` the task waits for two independent decisions; a disagreement opens an
adjudication that a third reviewer decides. A detection task (its input carries the model's boxes) is
decided with a box set instead of a class; two sets agree when their boxes match one to one by IoU
(review_types.decisions_agree). Those steps run only for tasks with boxes, so every stored history of a
classification task replays as it was recorded.

Reviewer actions are Updates whose validators refuse what is not allowed (a claim someone else holds,
a decision without the claim, a label outside the model's classes) before anything reaches history.
Handlers are synchronous, so a validator and its handler run in one step: two claims in one workflow
task cannot both pass. The workflow's own loop writes the side effects (labels, escalations, the
listing projection) through activities, in order, each write carrying a growing version.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from vision.boxes import BoxError
from workflows import search_attributes as sa
from workflows.alert_delivery import start_webhook_delivery
from workflows.failures import ReviewRefusal
from workflows.policies import DB_RETRY, DB_TIMEOUT, LOCAL_DB_TIMEOUT
from workflows.review_types import (
    MAX_CLAIM_LEASE_SECONDS,
    MAX_PRIORITY,
    OPENED_BY_BATCH,
    REVIEW_STEPS,
    UNUSABLE,
    WORKFLOW_NAME,
    ClaimRequest,
    Decision,
    DecisionRequest,
    EscalationInput,
    ProjectionUpdate,
    RecordLabelInput,
    ReleaseRequest,
    ReviewPolicyInput,
    ReviewStage,
    ReviewStatus,
    ReviewTaskInput,
    ReviewTaskResult,
    ReviewTaskView,
    box_decision_label,
    checked_boxes,
    decisions_agree,
    is_correction,
    priority_level,
    priority_name,
    review_workflow_id,
)

with workflow.unsafe.imports_passed_through():
    from activities.reviews import ReviewActivities


ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


async def start_review_task(input: ReviewTaskInput, task_queue: str | None = None) -> str:
    """Start a review task as an abandoned child of the calling workflow, without waiting for it.
    Idempotent: the id comes from frame and reason, and an existing task (running or closed) is kept,
    so a retried or re-run batch never opens a second task. Returns the task's workflow id."""
    review_id = review_workflow_id(input.frame_id, input.reason)
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await workflow.start_child_workflow(
            WORKFLOW_NAME,
            dataclasses.replace(input, steps_version=REVIEW_STEPS),
            search_attributes=sa.at_start(input.camera_id, input.site_id, ReviewStatus.PENDING.value),
            id=review_id,
            task_queue=task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    return review_id


class _Claim:
    def __init__(self, reviewer_id: str, reviewer_name: str, expires_at: datetime) -> None:
        self.reviewer_id = reviewer_id
        self.reviewer_name = reviewer_name
        self.expires_at = expires_at


@workflow.defn(name=WORKFLOW_NAME)
class ReviewTaskWorkflow:
    @workflow.init
    def __init__(self, input: ReviewTaskInput) -> None:
        self._input = input
        self._id = workflow.info().workflow_id
        self._created = workflow.now()
        self._status = ReviewStatus.PENDING
        self._stage = ReviewStage.REVIEW
        self._priority = priority_level(input.priority)
        self._required = 2 if input.reviews_required >= 2 else 1
        self._escalated_at: datetime | None = None
        self._claim: _Claim | None = None
        self._decisions: list[Decision] = []
        self._recorded = 0  # decisions written to Postgres as labels
        self._final_label: str | None = None
        self._final_boxes: list[dict[str, Any]] | None = None
        self._decided_at: datetime | None = None
        self._lease: timedelta | None = None
        self._webhook_url: str | None = None
        self._sla_due: datetime | None = None
        self._version = 1
        self._synced = 0

    # ---- reads ----------------------------------------------------------------------------------
    @workflow.query
    def state(self) -> ReviewTaskView:
        return self._view()

    @workflow.query
    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def _view(self) -> ReviewTaskView:
        claim = self._live_claim()
        return ReviewTaskView(
            review_id=self._id,
            status=self._status if self._status == ReviewStatus.DECIDED or claim else ReviewStatus.PENDING,
            stage=self._stage,
            priority=self._priority,
            escalated=self._escalated_at is not None,
            claimed_by=claim.reviewer_id if claim else None,
            claimed_by_name=claim.reviewer_name if claim else None,
            claim_expires_at=_iso(claim.expires_at) if claim else None,
            sla_due_at=_iso(self._sla_due),
            created_at=self._created.isoformat(),
            reviews_required=self._required,
            decisions_count=len(self._decisions),
            final_label=self._final_label,
            decided_at=_iso(self._decided_at),
            final_boxes=self._final_boxes,
        )

    def _live_claim(self) -> _Claim | None:
        if self._claim and workflow.now() < self._claim.expires_at:
            return self._claim
        return None

    # ---- reviewer actions -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._status == ReviewStatus.DECIDED:
            raise ReviewRefusal.DECIDED.error(f"task {self._id} is already decided ({self._final_label})")

    @workflow.update
    def claim(self, req: ClaimRequest) -> ReviewTaskView:
        self._check_claim(req)  # again: handlers are synchronous, but the rule must hold here too
        lease = timedelta(seconds=req.lease_seconds) if req.lease_seconds else self._lease
        assert lease is not None
        self._claim = _Claim(req.reviewer_id, req.reviewer_name, workflow.now() + lease)
        self._status = ReviewStatus.CLAIMED
        self._touch()
        return self._view()

    @claim.validator
    def _check_claim(self, req: ClaimRequest) -> None:
        self._check_open()
        if self._lease is None:
            raise ReviewRefusal.OPENING.error(f"task {self._id} is still opening; try again in a moment")
        if req.lease_seconds is not None and not 0 < req.lease_seconds <= MAX_CLAIM_LEASE_SECONDS:
            raise ReviewRefusal.INVALID_REQUEST.error(
                f"lease_seconds must be positive and at most {MAX_CLAIM_LEASE_SECONDS:.0f}")
        claim = self._live_claim()
        if claim and claim.reviewer_id != req.reviewer_id:
            holder = claim.reviewer_name or claim.reviewer_id
            raise ReviewRefusal.CLAIM_HELD.error(
                f"task {self._id} is claimed by {holder} until {claim.expires_at.isoformat()}")
        if any(d.reviewer_id == req.reviewer_id for d in self._decisions):
            raise ReviewRefusal.ALREADY_REVIEWED.error(
                f"you already reviewed task {self._id}; it needs another reviewer")

    @workflow.update
    def decide(self, req: DecisionRequest) -> ReviewTaskView:
        self._check_decision(req)
        note = (req.note or "").strip() or None
        label, boxes = req.label, None
        if self._input.boxes is not None and req.boxes is not None and req.label != UNUSABLE:  # a box set
            boxes = checked_boxes(req.boxes, self._input.classes)
            label = box_decision_label(boxes)
        self._decisions.append(
            Decision(req.reviewer_id, req.reviewer_name, label, note, workflow.now().isoformat(), self._stage, boxes)
        )
        self._claim = None
        self._advance()
        self._touch()
        return self._view()

    @decide.validator
    def _check_decision(self, req: DecisionRequest) -> None:
        self._check_open()
        if self._input.boxes is not None:
            self._check_box_decision(req)
        elif req.boxes is not None:
            raise ReviewRefusal.INVALID_REQUEST.error(
                f"task {self._id} is a classification task: decide it with a label, not boxes")
        elif req.label != UNUSABLE and req.label not in self._input.classes:
            raise ReviewRefusal.INVALID_LABEL.error(
                f"label {req.label!r} is not one of the model's classes ({', '.join(self._input.classes)})"
                f" nor {UNUSABLE!r}")
        claim = self._live_claim()
        if claim is None or claim.reviewer_id != req.reviewer_id:
            lapsed = self._claim is not None and self._claim.reviewer_id == req.reviewer_id
            raise ReviewRefusal.NOT_CLAIM_HOLDER.error(
                f"claim task {self._id} before deciding it" + (" (your claim expired)" if lapsed else ""))

    def _check_box_decision(self, req: DecisionRequest) -> None:
        """A detection task is decided with a box set (possibly empty: no defect), or as unusable."""
        if req.label == UNUSABLE:  # whatever boxes came with it
            return
        if req.boxes is None:
            raise ReviewRefusal.INVALID_REQUEST.error(
                f"task {self._id} is a detection task: decide it with boxes (or {UNUSABLE!r})")
        try:
            checked_boxes(req.boxes, self._input.classes)
        except BoxError as exc:
            raise ReviewRefusal.INVALID_LABEL.error(str(exc)) from None

    @workflow.update
    def release(self, req: ReleaseRequest) -> ReviewTaskView:
        self._check_release(req)
        self._claim = None
        self._status = ReviewStatus.PENDING
        self._touch()
        return self._view()

    @release.validator
    def _check_release(self, req: ReleaseRequest) -> None:
        self._check_open()
        claim = self._live_claim()
        if claim is None or claim.reviewer_id != req.reviewer_id:
            raise ReviewRefusal.NOT_CLAIM_HOLDER.error(f"you hold no claim on task {self._id}")

    def _advance(self) -> None:
        """Move the task on after a decision: closed, back to the queue, or on to adjudication."""
        if self._stage == ReviewStage.ADJUDICATION:
            self._close(self._decisions[-1])
        elif len(self._decisions) >= self._required:
            # Box sets are matched by IoU (an empty set is "no defect"); classes must be equal.
            if decisions_agree(self._decisions):
                self._close(self._decisions[-1])
            else:
                self._stage = ReviewStage.ADJUDICATION
                self._status = ReviewStatus.PENDING
        else:
            self._status = ReviewStatus.PENDING

    def _close(self, decision: Decision) -> None:
        self._final_label = decision.label
        self._final_boxes = decision.boxes  # the last reviewer's set: it agrees with the others, or adjudicates
        self._decided_at = workflow.now()
        self._status = ReviewStatus.DECIDED

    def _touch(self) -> None:
        self._version += 1

    # ---- the loop that keeps timers and side effects ---------------------------------------------
    @workflow.run
    async def run(self, input: ReviewTaskInput) -> ReviewTaskResult:
        if input.steps_version < 1:  # since 1 they are given at start: one visibility write, one event less
            workflow.upsert_search_attributes([sa.CAMERA.value_set(input.camera_id),
                                               sa.SITE.value_set(input.site_id),
                                               sa.STATUS.value_set(ReviewStatus.PENDING)])
        sla, lease = input.sla_seconds, input.claim_lease_seconds
        self._webhook_url = input.escalation_webhook_url
        if sla is None or lease is None or self._webhook_url is None:
            policy = await self._db(ReviewActivities.review_policy, ReviewPolicyInput(self._priority))
            sla = policy.sla_seconds if sla is None else sla
            lease = policy.claim_lease_seconds if lease is None else lease
            if self._webhook_url is None:
                self._webhook_url = policy.escalation_webhook_url
        self._sla_due = self._created + timedelta(seconds=sla)
        self._lease = timedelta(seconds=lease)
        if input.steps_version >= OPENED_BY_BATCH:
            self._synced = self._version  # the batch that opened it wrote its first projection row
        else:
            self._touch()

        while True:
            await self._write_side_effects()
            if self._status == ReviewStatus.DECIDED and self._synced == self._version:
                break
            now = workflow.now()
            deadlines = [d for d in (self._claim.expires_at if self._claim else None,
                                     None if self._escalated_at else self._sla_due) if d]
            wake = min(deadlines) if deadlines else None
            if wake is None or wake > now:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._synced != self._version or self._recorded != len(self._decisions),
                        timeout=(wake - now) if wake else None,
                    )
            now = workflow.now()
            if self._claim and now >= self._claim.expires_at and self._status != ReviewStatus.DECIDED:
                workflow.logger.info("claim expired on %s (held by %s)", self._id, self._claim.reviewer_id)
                self._claim = None
                self._status = ReviewStatus.PENDING
                self._touch()
            open_ = self._status != ReviewStatus.DECIDED
            if self._escalated_at is None and self._sla_due and now >= self._sla_due and open_:
                await self._escalate(now)

        workflow.upsert_search_attributes([sa.STATUS.value_set(ReviewStatus.DECIDED)])
        assert self._final_label is not None
        return ReviewTaskResult(
            review_id=self._id,
            final_label=self._final_label,
            corrected=is_correction(self._final_label, input.predicted_label),
            escalated=self._escalated_at is not None,
            decisions=list(self._decisions),
            final_boxes=self._final_boxes,
        )

    async def _escalate(self, now: datetime) -> None:
        before = self._priority
        self._priority = min(MAX_PRIORITY, before + 1)
        self._escalated_at = now
        self._touch()
        workflow.upsert_search_attributes([sa.STATUS.value_set("escalated")])
        # Projection first: the queue shows the flag and the new priority whatever happens next.
        await self._sync_projection()
        escalation = EscalationInput(
            review_id=self._id, frame_id=self._input.frame_id, batch_id=self._input.batch_id,
            camera_id=self._input.camera_id, site_id=self._input.site_id, reason=self._input.reason,
            priority_before=before, priority_after=self._priority,
            sla_due_at=_iso(self._sla_due) or "", escalated_at=now.isoformat(),
        )
        escalation.webhook_workflow_id = await self._send_escalation_webhook(escalation)
        await self._db(ReviewActivities.record_escalation, escalation)

    async def _send_escalation_webhook(self, escalation: EscalationInput) -> str | None:
        """The signed `review.escalated` webhook, delivered by its own workflow (retries and backoff there,
        never here); None when no escalation webhook URL is configured."""
        if not self._webhook_url:
            return None
        payload = {
            "event": "review.escalated", "review_id": escalation.review_id, "frame_id": escalation.frame_id,
            "batch_id": escalation.batch_id, "camera_id": escalation.camera_id, "site_id": escalation.site_id,
            "reason": escalation.reason, "priority": priority_name(escalation.priority_after),
            "sla_due_at": escalation.sla_due_at, "escalated_at": escalation.escalated_at,
            "predicted_label": self._input.predicted_label, "confidence": self._input.confidence,
        }
        return await start_webhook_delivery(
            self._webhook_url, "review.escalated", payload, delivery_id=f"{self._id}.escalated"
        )

    async def _db(self, activity: Callable[[Any, ArgT], Awaitable[ResultT]], arg: ArgT) -> ResultT:
        """One short, idempotent Postgres step (each write carries its version). As a local activity it
        runs inside the workflow task and is recorded as one marker, where a regular activity costs three
        events, a trip through the task queue and another workflow task. With its attributes given at
        start, a task opens in 7 events and one workflow task instead of 18 and three. Reviews were more
        than half of Temporal's CPU per batch (a 2% QA sample opens about one task per 64 frames)."""
        if self._input.steps_version >= 1:
            return await workflow.execute_local_activity_method(
                activity, arg, start_to_close_timeout=LOCAL_DB_TIMEOUT, retry_policy=DB_RETRY)
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY)

    async def _write_side_effects(self) -> None:
        while self._recorded < len(self._decisions):
            decision = self._decisions[self._recorded]
            await self._db(ReviewActivities.record_review_label, RecordLabelInput(
                review_id=self._id, frame_id=self._input.frame_id, batch_id=self._input.batch_id,
                object_key=self._input.object_key, predicted_label=self._input.predicted_label,
                confidence=self._input.confidence, model_version=self._input.model_version, decision=decision,
            ))
            self._recorded += 1
        if self._synced != self._version:
            await self._sync_projection()

    async def _sync_projection(self) -> None:
        version = self._version
        await self._db(ReviewActivities.sync_review_projection, ProjectionUpdate(
            version=version, run_id=workflow.info().run_id, task=self._input, view=self._view(),
            escalated_at=_iso(self._escalated_at), decided_by=[d.reviewer_id for d in self._decisions]))
        self._synced = max(self._synced, version)
