"""ReviewTaskWorkflow against real Temporal and real Postgres: claim races, lease expiry and SLA
escalation (on the session's time-skipping test server), consensus with adjudication, idempotent creation.
The main flows store their histories (`record_history`) for the replay guard in tests/test_replay.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from functools import partial

import pytest
import pytest_asyncio
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.reviews import ReviewActivities
from infra.settings import Settings
from tests.polling import eventually
from tests.review_support import fetch_all, fetch_one, insert_batch, review_input
from workflows import search_attributes as sa
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.alert_types import DeliverWebhookInput, DeliveryResult, EnsureSubscriptionInput, webhook_task_queue
from workflows.review_task import ReviewTaskWorkflow, start_review_task
from workflows.review_types import (
    REVIEW_STEPS,
    ClaimRequest,
    DecisionRequest,
    ReleaseRequest,
    ReviewStatus,
    ReviewTaskInput,
    review_workflow_id,
)


def review_activities(pool, **settings) -> list:
    acts = ReviewActivities(pool, Settings(_env_file=None, **settings))
    return [acts.review_policy, acts.sync_review_projection, acts.record_review_label, acts.record_escalation]


async def start(client, task_queue: str, input: ReviewTaskInput):
    """As start_review_task starts a task from a batch, attributes included (tasks of steps 0 upsert their own)."""
    return await client.start_workflow(
        ReviewTaskWorkflow.run, input, id=review_workflow_id(input.frame_id, input.reason), task_queue=task_queue,
        search_attributes=(sa.at_start(input.camera_id, input.site_id, ReviewStatus.PENDING.value)
                           if input.steps_version else None),
    )


def refusal(exc: WorkflowUpdateFailedError) -> str:
    return getattr(exc.cause, "type", None) or type(exc.cause).__name__


async def projection(pool, review_id: str) -> dict | None:
    return await fetch_one(pool, "SELECT * FROM review_tasks WHERE review_id = %s", review_id)


async def queue_row(pool, review_id: str) -> dict:
    """The task's row in the review queue, which the test expects by now."""
    row = await projection(pool, review_id)
    assert row is not None, f"{review_id} is not in the review queue"
    return row


# ---- on the dev server ----------------------------------------------------------------------------

@pytest_asyncio.fixture
async def review_worker(temporal_client, db_pool, task_queue):
    async with Worker(temporal_client, task_queue=task_queue, workflows=[ReviewTaskWorkflow],
                      activities=review_activities(db_pool)):
        yield


def test_workflow_ids_are_safe_and_distinct():
    a = review_workflow_id("batch-cam1-k1/0003", "low_confidence")
    b = review_workflow_id("batch-cam1-k1:0003", "low_confidence")
    assert a.startswith("review-batch-cam1-k1.0003.") and a.endswith("-low_confidence")
    assert a != b and "/" not in a and ":" not in b
    assert review_workflow_id("batch-x", "qa_sample") == "review-batch-x-qa_sample"
    assert review_workflow_id("f", "low_confidence") != review_workflow_id("f", "qa_sample")
    with pytest.raises(ValueError):
        review_workflow_id("f", "because")


async def test_claim_race_between_two_reviewers_has_one_winner(temporal_client, db_pool, task_queue, review_worker,
                                                                record_history):
    input = review_input()
    await insert_batch(db_pool, input.batch_id)
    handle = await start(temporal_client, task_queue, input)
    await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")

    outcomes = await asyncio.gather(
        handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-alice", "alice")),
        handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-bob", "bob")),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, WorkflowUpdateFailedError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert refusal(losers[0]) == "ClaimHeld"
    winner = winners[0].claimed_by
    loser = "key-bob" if winner == "key-alice" else "key-alice"
    assert winners[0].status == "claimed" and winners[0].claim_expires_at

    # The loser can neither decide nor release; the winner's claim stands.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest(loser, "ok"))
    assert refusal(refused.value) == "NotClaimHolder"
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(ReviewTaskWorkflow.release, ReleaseRequest(loser))
    assert refusal(refused.value) == "NotClaimHolder"
    # A label outside the model's classes is refused before it reaches history.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest(winner, "cat"))
    assert refusal(refused.value) == "InvalidLabel"

    decided = await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest(winner, "dent", note=" bent "))
    assert decided.status == "decided" and decided.final_label == "dent"
    result = await handle.result()
    assert result.final_label == "dent" and result.corrected is True and result.escalated is False
    await record_history(handle, "review_task_claim_decide_steps1")

    labels = await fetch_all(db_pool, "SELECT * FROM review_labels WHERE review_id = %s", handle.id)
    assert len(labels) == 1
    row = labels[0]
    assert (row["frame_id"], row["label"], row["reviewer_id"], row["predicted_label"]) == (
        input.frame_id, "dent", winner, "scratch")
    assert row["is_correction"] is True and row["note"] == "bent" and row["model_confidence"] == pytest.approx(0.41)
    task = await queue_row(db_pool, handle.id)
    assert (task["status"], task["final_label"], task["corrected"], task["claimed_by"]) == (
        "decided", "dent", True, None)
    batch = await fetch_one(db_pool, "SELECT * FROM batches WHERE batch_id = %s", input.batch_id)
    assert batch is not None
    assert (batch["reviews_pending"], batch["reviews_decided"], batch["review_corrections"]) == (0, 1, 1)
    # Refused updates never reached history: only the accepted claim and decision are there.
    accepted = [e async for e in handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    assert len(accepted) == 2
    # Updates against a closed task are refused.
    with pytest.raises(RPCError, match="completed"):
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest(loser, "x"))


async def history_once_waiting(handle) -> list:
    """The task's history once it waits on its SLA timer (the last thing it does on opening); else []."""
    events = [e async for e in handle.fetch_history_events()]
    return events if events[-1].event_type == EventType.EVENT_TYPE_TIMER_STARTED else []


async def test_a_task_opens_in_one_workflow_task(temporal_client, db_pool, task_queue, review_worker):
    """Steps 1: policy read and queue row written by local activities, attributes given at start: no
    activity goes through the task queue, no attribute upsert, one workflow task to open. A task of
    steps 0 (started before; its input has no such field) keeps its regular activities and upsert, which
    is what its history holds. Both are findable by camera, site and status."""
    histories = {}
    for steps in (REVIEW_STEPS, 0):
        input = review_input(steps_version=steps, camera_id=f"cam-{uuid.uuid4().hex[:8]}")
        await insert_batch(db_pool, input.batch_id)
        handle = await start(temporal_client, task_queue, input)
        await eventually(partial(projection, db_pool, handle.id), message="the task in the queue")
        histories[steps] = await eventually(partial(history_once_waiting, handle),
                                            message="the task waiting on its SLA timer")
        found = await eventually(partial(listed, temporal_client,
                                         f"SightlineCamera = '{input.camera_id}' AND SightlineSite = "
                                         f"'{input.site_id}' AND SightlineStatus = 'pending'"),
                                 message="the task found by its attributes")
        assert found == [handle.id]
    kinds = {steps: [e.event_type for e in events] for steps, events in histories.items()}
    lean, old = kinds[REVIEW_STEPS], kinds[0]
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in lean
    assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in lean
    assert lean.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
    assert lean.count(EventType.EVENT_TYPE_MARKER_RECORDED) == 2  # the policy, the queue row
    assert old.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 2
    assert old.count(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 1
    assert len(lean) == 7 and len(old) == 18, (lean, old)


async def listed(client, query: str) -> list[str]:
    return [w.id async for w in client.list_workflows(query)]


async def test_release_returns_the_task_to_the_queue(temporal_client, db_pool, task_queue, review_worker,
                                                     record_history):
    handle = await start(temporal_client, task_queue, review_input(predicted_label="ok"))
    await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")
    await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))

    async def status(expected):
        row = await projection(db_pool, handle.id)
        return row if row and row["status"] == expected else None

    claimed = await eventually(lambda: status("claimed"), message="claimed in the projection")
    assert claimed["claimed_by"] == "key-a" and claimed["claimed_by_name"] == "a"
    released = await handle.execute_update(ReviewTaskWorkflow.release, ReleaseRequest("key-a"))
    assert released.status == "pending" and released.claimed_by is None
    await eventually(lambda: status("pending"), message="pending again in the projection")
    taken = await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-b", "b"))
    assert taken.claimed_by == "key-b"
    done = await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-b", "unusable"))
    assert done.final_label == "unusable"
    assert (await handle.result()).corrected is False  # unusable is not a correction
    await record_history(handle, "review_task_release_reclaim_steps1")


async def test_consensus_disagreement_goes_to_a_third_reviewer(temporal_client, db_pool, task_queue, review_worker,
                                                               record_history):
    input = review_input(reviews_required=2, reason="qa_sample", predicted_label="ok", confidence=0.97)
    await insert_batch(db_pool, input.batch_id)
    handle = await start(temporal_client, task_queue, input)
    await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")

    await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))
    first = await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "ok"))
    assert (first.status, first.stage, first.decisions_count) == ("pending", "review", 1)
    # Independent decisions: the first reviewer cannot take the task again.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))
    assert refusal(refused.value) == "AlreadyReviewed"

    await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-b", "b"))
    second = await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-b", "scratch"))
    assert (second.status, second.stage, second.final_label) == ("pending", "adjudication", None)

    async def adjudication_listed():
        row = await projection(db_pool, handle.id)
        return row if row and row["stage"] == "adjudication" else None

    listed = await adjudication_listed() or await eventually(adjudication_listed, message="adjudication listed")
    assert sorted(listed["decided_by"]) == ["key-a", "key-b"] and listed["status"] == "pending"
    for reviewer in ("key-a", "key-b"):
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest(reviewer, reviewer))

    await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-c", "c"))
    final = await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-c", "scratch"))
    assert final.status == "decided" and final.final_label == "scratch"
    result = await handle.result()
    assert result.corrected is True and [d.label for d in result.decisions] == ["ok", "scratch", "scratch"]
    await record_history(handle, "review_task_adjudication_steps1")
    labels = await fetch_all(db_pool, "SELECT reviewer_id, label, stage, is_correction FROM review_labels"
                             " WHERE review_id = %s ORDER BY decided_at, label_id", handle.id)
    assert [(r["reviewer_id"], r["label"], r["stage"], r["is_correction"]) for r in labels] == [
        ("key-a", "ok", "review", False), ("key-b", "scratch", "review", True),
        ("key-c", "scratch", "adjudication", True)]
    trained = await fetch_one(db_pool, "SELECT label FROM reviewed_frame_labels WHERE frame_id = %s", input.frame_id)
    assert trained is not None and trained["label"] == "scratch"


async def test_consensus_agreement_closes_after_two(temporal_client, db_pool, task_queue, review_worker):
    handle = await start(temporal_client, task_queue, review_input(reviews_required=2))
    for reviewer in ("key-a", "key-b"):
        await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest(reviewer, reviewer))
        view = await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest(reviewer, "scratch"))
    assert view.status == "decided" and view.final_label == "scratch" and view.stage == "review"
    result = await handle.result()
    assert result.corrected is False and len(result.decisions) == 2


@workflow.defn(sandboxed=False)
class OpensReviewTwice:
    """Stands in for the batch workflow: opens the same review twice, as a retry would."""

    @workflow.run
    async def run(self, input: ReviewTaskInput) -> list[str]:
        return [await start_review_task(input), await start_review_task(input)]


async def test_creation_is_idempotent(temporal_client, db_pool, task_queue):
    input = review_input()
    review_id = review_workflow_id(input.frame_id, input.reason)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[ReviewTaskWorkflow, OpensReviewTwice],
                      activities=review_activities(db_pool)):
        ids = await temporal_client.execute_workflow(OpensReviewTwice.run, input, id=f"parent-{uuid.uuid4().hex}",
                                                     task_queue=task_queue)
        assert ids == [review_id, review_id]
        # The parent closed; the abandoned task lives on.
        handle = temporal_client.get_workflow_handle(review_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await eventually(lambda: projection(db_pool, review_id), message="the task in the queue")
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))
        await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "ok"))
        await handle.result()
        # A re-run batch after the task closed opens no second task either.
        await temporal_client.execute_workflow(OpensReviewTwice.run, input, id=f"parent-{uuid.uuid4().hex}",
                                               task_queue=task_queue)
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{review_id}'")]
    assert len(runs) == 1 and runs[0].status == WorkflowExecutionStatus.COMPLETED
    rows = await fetch_all(db_pool, "SELECT review_id FROM review_tasks WHERE frame_id = %s", input.frame_id)
    assert [r["review_id"] for r in rows] == [review_id]


# ---- on the time-skipping test server: leases and SLAs measured in minutes and hours ----------------

deliveries: list[DeliverWebhookInput] = []


@activity.defn(name="ensure_webhook_subscription")
async def fake_ensure_subscription(input: EnsureSubscriptionInput) -> str:
    return "sub-test"


@activity.defn(name="deliver_webhook")
async def fake_deliver_webhook(input: DeliverWebhookInput) -> DeliveryResult:
    deliveries.append(input)
    return DeliveryResult(input.delivery_id, input.subscription_id, 1, 204, 1.0)


async def test_claim_lease_expires_and_the_task_returns_to_the_queue(time_skipping_env, db_pool, task_queue,
                                                                     record_history):
    client = time_skipping_env.client
    async with Worker(client, task_queue=task_queue, workflows=[ReviewTaskWorkflow],
                      activities=review_activities(db_pool, review_claim_lease_seconds=600)):
        handle = await start(client, task_queue, review_input())
        await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")
        claimed = await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))
        assert claimed.claimed_by == "key-a"

        async def row_where(pred):
            row = await projection(db_pool, handle.id)
            return row if row and pred(row) else None

        row = await eventually(lambda: row_where(lambda r: r["status"] == "claimed"), message="claim listed")
        assert (row["claim_expires_at"] - row["created_at"]).total_seconds() == pytest.approx(600, abs=5)

        await time_skipping_env.sleep(timedelta(seconds=300))
        with pytest.raises(WorkflowUpdateFailedError) as refused:  # half-way through, still held
            await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-b", "b"))
        assert refusal(refused.value) == "ClaimHeld"

        await time_skipping_env.sleep(timedelta(seconds=320))
        state = await handle.query(ReviewTaskWorkflow.state)
        assert state.status == "pending" and state.claimed_by is None
        row = await eventually(lambda: row_where(lambda r: r["status"] == "pending"), message="lease expiry listed")
        assert row["claimed_by"] is None and row["claim_expires_at"] is None
        # The lapsed holder cannot decide; someone else takes it.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "ok"))
        assert refusal(refused.value) == "NotClaimHolder"
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-b", "b"))
        await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-b", "ok"))
        assert (await handle.result()).final_label == "ok"
        await record_history(handle, "review_task_lease_expiry_steps1")


async def test_sla_passes_and_the_task_escalates(time_skipping_env, db_pool, task_queue, record_history):
    client = time_skipping_env.client
    deliveries.clear()
    async with Worker(client, task_queue=task_queue, workflows=[ReviewTaskWorkflow],
                      activities=review_activities(db_pool, review_sla_seconds={"normal": 14400.0, "high": 3600.0},
                                                   review_escalation_webhook_url="http://hooks.test/escalations")), \
            Worker(client, task_queue=webhook_task_queue(task_queue), workflows=[WebhookDeliveryWorkflow],
                   activities=[fake_ensure_subscription, fake_deliver_webhook]):
        input = review_input(priority="high")
        await insert_batch(db_pool, input.batch_id)
        handle = await start(client, task_queue, input)
        await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")
        row = await queue_row(db_pool, handle.id)
        assert row["priority"] == 2 and not row["escalated"]
        assert (row["sla_due_at"] - row["created_at"]).total_seconds() == pytest.approx(3600, abs=5)

        await time_skipping_env.sleep(timedelta(seconds=3500))
        assert (await handle.query(ReviewTaskWorkflow.state)).escalated is False

        await time_skipping_env.sleep(timedelta(seconds=200))

        async def escalated():
            r = await projection(db_pool, handle.id)
            return r if r and r["escalated"] else None

        row = await eventually(escalated, message="escalation listed")
        assert row["priority"] == 3 and row["status"] == "pending" and row["escalated_at"] is not None
        state = await handle.query(ReviewTaskWorkflow.state)
        assert state.escalated and state.priority == 3
        esc = await eventually(lambda: fetch_one(db_pool, "SELECT * FROM review_escalations WHERE review_id = %s",
                                                 handle.id), message="escalation row")
        assert (esc["priority_before"], esc["priority_after"]) == (2, 3)
        assert esc["webhook_workflow_id"] == f"webhook-{handle.id}.escalated"
        await eventually(lambda: asyncio.sleep(0, deliveries), message="the escalation webhook")
        assert deliveries[0].event == "review.escalated" and deliveries[0].payload["review_id"] == handle.id
        batch = await fetch_one(db_pool, "SELECT reviews_escalated, reviews_pending FROM batches WHERE batch_id = %s",
                                input.batch_id)
        assert batch is not None
        assert (batch["reviews_escalated"], batch["reviews_pending"]) == (1, 1)

        # Escalated tasks stay reviewable.
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))
        await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "scratch"))
        result = await handle.result()
        assert result.escalated is True and result.final_label == "scratch" and len(deliveries) == 1
        await record_history(handle, "review_task_sla_escalation_steps1")
