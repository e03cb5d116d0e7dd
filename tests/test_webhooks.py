"""Webhook alerts against a real local HTTP server, the dev Temporal server and Postgres: signed bodies,
retries with backoff after failures, non-retryable rejections, the delivery log, and a dead endpoint
that never holds up the workflow that raised the alert."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import psycopg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.webhooks import WebhookActivities
from infra.postgres_server import free_port
from infra.tables.webhook_subscriptions import ensure_subscription, get_subscription_by_url, rotate_secret, set_disabled
from infra.webhook_signatures import encode_body, sign, verify
from tests.stand_in_workflows import AlertingParentInput, AlertingParentWorkflow
from tests.webhook_receiver import Receiver
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.alert_types import WebhookDeliveryInput, WebhookRetry, webhook_workflow_id

FAST = WebhookRetry(initial_interval_s=0.2, maximum_interval_s=1.0, maximum_attempts=5, expiry_s=120)


@pytest.fixture
async def webhook_worker(temporal_client, db_pool, task_queue):
    async with httpx.AsyncClient() as http:
        activities = WebhookActivities(db_pool, http)
        async with Worker(
            temporal_client,
            task_queue=task_queue,
            workflows=[WebhookDeliveryWorkflow, AlertingParentWorkflow],
            activities=[activities.ensure_webhook_subscription, activities.deliver_webhook],
        ):
            yield


async def _log_rows(db_pool, delivery_id: str) -> list[dict]:
    async with db_pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM webhook_deliveries WHERE delivery_id = %s ORDER BY attempt",
                                 (delivery_id,))
        return await cur.fetchall()


def test_signature_round_trip():
    body = encode_body("d-1", "defect.detected", int(time.time()), {"frame_id": "x"})
    signature = sign("whsec_a", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify("whsec_a", body, signature)
    assert not verify("whsec_b", body, signature)
    assert not verify("whsec_a", body + b" ", signature)
    assert not verify("whsec_a", body, None)
    assert not verify("whsec_a", body, signature, now=time.time() + 3600), "a stale body is a replay"


async def test_signed_delivery_retried_after_a_500(temporal_client, db_pool, task_queue, webhook_worker):
    delivery_id = f"batch-cam-{uuid.uuid4().hex[:8]}.defect"
    payload = {"batch_id": "batch-cam-1", "frame_id": "batch-cam-1:0003", "class": "scratch", "confidence": 0.97}
    with Receiver([500]) as receiver:
        result = await temporal_client.execute_workflow(
            WebhookDeliveryWorkflow.run,
            WebhookDeliveryInput(delivery_id, receiver.url, "defect.detected", payload, FAST),
            id=webhook_workflow_id(delivery_id),
            task_queue=task_queue,
        )
    assert result.attempt == 2 and result.status_code == 200

    # The URL got a subscription on first use; its secret signs every attempt.
    async with db_pool.connection() as conn:
        subscription = await get_subscription_by_url(conn, receiver.url)
    assert subscription is not None and result.subscription_id == subscription.subscription_id
    assert len(receiver.requests) == 2
    for attempt, (headers, body) in enumerate(receiver.requests, start=1):
        assert verify(subscription.secret, body, headers["x-sightline-signature"])
        assert headers["x-sightline-delivery"] == delivery_id
        assert headers["x-sightline-attempt"] == str(attempt)
        assert headers["x-sightline-event"] == "defect.detected"
        assert headers["content-type"] == "application/json"
        decoded = json.loads(body)
        assert decoded["data"] == payload and decoded["delivery_id"] == delivery_id
        assert str(decoded["timestamp"]) == headers["x-sightline-timestamp"]

    rows = await _log_rows(db_pool, delivery_id)
    assert [(r["attempt"], r["status_code"]) for r in rows] == [(1, 500), (2, 200)]
    assert rows[0]["error"].startswith("HTTP 500") and rows[1]["error"] is None
    assert all(r["subscription_id"] == subscription.subscription_id and r["url"] == receiver.url for r in rows)
    assert all(r["duration_ms"] >= 0 and r["workflow_id"] == webhook_workflow_id(delivery_id) for r in rows)

    # The secret never entered Temporal: not in the workflow's history.
    history = await temporal_client.get_workflow_handle(webhook_workflow_id(delivery_id)).fetch_history()
    assert subscription.secret not in history.to_json()


async def test_429_is_retried_but_a_404_stops_at_once(temporal_client, db_pool, task_queue, webhook_worker):
    delivery_id = f"d-{uuid.uuid4().hex[:8]}"
    with Receiver([429, 404, 200]) as receiver:
        with pytest.raises(WorkflowFailureError) as failure:
            await temporal_client.execute_workflow(
                WebhookDeliveryWorkflow.run,
                WebhookDeliveryInput(delivery_id, receiver.url, "defect.detected", {}, FAST),
                id=webhook_workflow_id(delivery_id),
                task_queue=task_queue,
            )
        assert len(receiver.requests) == 2, "the 404 must not be retried"
    assert "rejected the delivery" in str(failure.value.cause.__cause__)
    rows = await _log_rows(db_pool, delivery_id)
    assert [(r["attempt"], r["status_code"]) for r in rows] == [(1, 429), (2, 404)]
    # 429 carried Retry-After: 1, which replaces the 0.2 s backoff.
    assert (rows[1]["at"] - rows[0]["at"]).total_seconds() >= 0.9


async def test_dead_endpoint_does_not_block_the_parent(temporal_client, db_pool, task_queue, webhook_worker):
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    delivery_id = f"batch-dead-{uuid.uuid4().hex[:8]}.defect"
    retry = WebhookRetry(initial_interval_s=0.5, maximum_interval_s=1.0, maximum_attempts=3, expiry_s=60)
    parent = await temporal_client.start_workflow(
        AlertingParentWorkflow.run, AlertingParentInput(dead_url, delivery_id, retry),
        id=f"parent-{delivery_id}", task_queue=task_queue,
    )
    child_id = await asyncio.wait_for(parent.result(), 30)
    assert child_id == webhook_workflow_id(delivery_id)
    child = temporal_client.get_workflow_handle(child_id)
    # The parent is done while its alert is still being retried...
    assert (await child.describe()).status == WorkflowExecutionStatus.RUNNING

    # ...and the alert gives up on its own after its capped attempts, each one logged.
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(child.result(), 60)
    parent_closed = (await parent.describe()).close_time
    child_closed = (await child.describe()).close_time
    assert parent_closed < child_closed
    rows = await _log_rows(db_pool, delivery_id)
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert all(r["status_code"] is None and "Connect" in r["error"] for r in rows)


async def test_disabled_subscription_fails_without_retrying(temporal_client, db_pool, task_queue, webhook_worker):
    with Receiver([]) as receiver:
        async with db_pool.connection() as conn:
            subscription, created = await ensure_subscription(conn, receiver.url)
            again, created_again = await ensure_subscription(conn, receiver.url)
            assert created and not created_again and again.secret == subscription.secret
            rotated = await rotate_secret(conn, subscription.subscription_id)
            assert rotated is not None and rotated.secret != subscription.secret and rotated.rotated_at is not None
            await set_disabled(conn, subscription.subscription_id, True)
        delivery_id = f"d-{uuid.uuid4().hex[:8]}"
        with pytest.raises(WorkflowFailureError) as failure:
            await temporal_client.execute_workflow(
                WebhookDeliveryWorkflow.run,
                WebhookDeliveryInput(delivery_id, receiver.url, "defect.detected", {}, FAST),
                id=webhook_workflow_id(delivery_id), task_queue=task_queue,
            )
        assert receiver.requests == []
    assert "disabled" in str(failure.value.cause.__cause__)


async def test_invalid_url_fails_without_retrying(temporal_client, task_queue, webhook_worker):
    delivery_id = f"d-{uuid.uuid4().hex[:8]}"
    with pytest.raises(WorkflowFailureError) as failure:
        await temporal_client.execute_workflow(
            WebhookDeliveryWorkflow.run,
            WebhookDeliveryInput(delivery_id, "ftp://example.invalid/x", "defect.detected", {}, FAST),
            id=webhook_workflow_id(delivery_id), task_queue=task_queue,
        )
    assert "http://" in str(failure.value.cause.__cause__)


def test_webhooks_cli_prints_the_secret_the_signature_uses(postgres_url, monkeypatch):
    from infra.settings import get_settings
    from infra.webhooks_cli import webhooks_app

    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        url = f"https://receiver.example/{uuid.uuid4().hex[:8]}"
        first = runner.invoke(webhooks_app, ["create", "--url", url])
        assert first.exit_code == 0, first.output
        secret = first.output.strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        second = runner.invoke(webhooks_app, ["create", "--url", url])
        assert second.output.strip().splitlines()[-1] == secret and "already registered" in second.output
        assert runner.invoke(webhooks_app, ["create", "--url", "not a url"]).exit_code != 0
        listed = runner.invoke(webhooks_app, ["list"])
        assert listed.exit_code == 0 and secret not in listed.output
        with psycopg.connect(postgres_url) as conn:
            audited = conn.execute(
                "SELECT action FROM audit_log WHERE details->>'url' = %s", (url,)
            ).fetchall()
        assert audited == [("webhook.create",)], "one subscription created, one audit row"
    finally:
        get_settings.cache_clear()
