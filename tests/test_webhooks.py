"""Webhook alerts against a real local HTTP server (on 127.0.0.1 only), the dev Temporal server and
Postgres: signed bodies, retries with backoff after failures, non-retryable rejections, the delivery log,
a dead endpoint that never holds up the workflow that raised the alert, and the guard: addresses checked
at every delivery (loopback refused unless the settings allow it), no redirects followed, replies read
only a few KB and never logged, URLs kept out of messages, registration per site, secret rotation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.webhooks import MAX_REPLY_BYTES, WebhookActivities
from infra.outbound_addresses import AddressPolicy, AddressRefused
from infra.postgres_server import free_port
from infra.tables.webhook_subscriptions import (
    WebhookConflict,
    ensure_subscription,
    get_subscription_by_url,
    register_webhook,
    registered_webhook,
    rotate_secret,
    set_disabled,
)
from infra.webhook_signatures import encode_body, sign, signature_header, verify
from tests.stand_in_workflows import AlertingParentInput, AlertingParentWorkflow
from tests.webhook_receiver import Receiver
from workers.webhooks import webhook_worker as webhook_queue_worker
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.alert_types import WebhookDeliveryInput, WebhookRetry, webhook_task_queue, webhook_workflow_id

FAST = WebhookRetry(initial_interval_s=0.2, maximum_interval_s=1.0, maximum_attempts=5, expiry_s=120)
# Tests deliver to receivers on this machine: they opt in to loopback, as the local demo does.
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]
LOOPBACK = AddressPolicy.allowing(LOOPBACK_NETWORKS)


@pytest.fixture
async def webhook_worker(temporal_client, db_pool, task_queue, settings_factory):
    """Deliveries started directly on the test's queue, and the production webhook worker on the webhook
    queue beside it (where a workflow's alerts go), both allowed to reach loopback."""
    activities = WebhookActivities(db_pool, policy=LOOPBACK)
    settings = settings_factory(webhook_allowed_networks=LOOPBACK_NETWORKS)
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[WebhookDeliveryWorkflow, AlertingParentWorkflow],
        activities=[activities.ensure_webhook_subscription, activities.deliver_webhook],
    ), webhook_queue_worker(temporal_client, db_pool, settings):
        yield


@pytest.fixture
async def public_only_worker(temporal_client, db_pool, task_queue):
    """As production runs: public addresses only."""
    activities = WebhookActivities(db_pool)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[WebhookDeliveryWorkflow],
                      activities=[activities.ensure_webhook_subscription, activities.deliver_webhook]):
        yield


class ScriptedServer:
    """A receiver on 127.0.0.1 whose handler the test writes (redirects, endless replies)."""

    def __init__(self, handle) -> None:
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                server.hits += 1
                self.rfile.read(int(self.headers["Content-Length"]))
                handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/{uuid.uuid4().hex[:6]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


async def deliver(temporal_client, task_queue, url: str, delivery_id: str | None = None,
                  retry: WebhookRetry = FAST):
    delivery_id = delivery_id or f"d-{uuid.uuid4().hex[:8]}"
    return await temporal_client.execute_workflow(
        WebhookDeliveryWorkflow.run, WebhookDeliveryInput(delivery_id, url, "defect.detected", {"n": 1}, retry),
        id=webhook_workflow_id(delivery_id), task_queue=task_queue)


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
    # The parent is done while its alert is still being retried, on the webhook task queue: a slow
    # receiver holds the webhook worker's slots, never the orchestration worker's...
    described = await child.describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.task_queue == webhook_task_queue(task_queue)

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
            assert rotated.signing_secrets() == [rotated.secret], "no overlap asked: the old secret is gone"
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
    message = str(failure.value.cause.__cause__)
    assert "http://" in message and "example.invalid" not in message, "the reason, never the URL"


def _flat(output: str) -> str:
    """CLI output with rich's box drawing and wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


def test_webhooks_cli_registers_a_url_for_a_site_and_prints_its_secret(postgres_url, monkeypatch):
    from cli.webhooks import webhooks_app
    from infra.settings import get_settings

    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    runner = CliRunner()
    url = f"http://127.0.0.1:9/{uuid.uuid4().hex[:8]}"  # nothing is sent: registration only resolves it
    try:
        refused = runner.invoke(webhooks_app, ["create", "--url", url, "--site", "plant-a"])
        assert refused.exit_code != 0 and "non-public address (loopback)" in _flat(refused.output), refused.output

        monkeypatch.setenv("SIGHTLINE_WEBHOOK_ALLOWED_NETWORKS", json.dumps(LOOPBACK_NETWORKS))
        get_settings.cache_clear()
        first = runner.invoke(webhooks_app, ["create", "--url", url, "--site", "plant-a"])
        assert first.exit_code == 0, first.output
        secret = first.output.strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        second = runner.invoke(webhooks_app, ["create", "--url", url, "--site", "plant-a"])
        assert second.output.strip().splitlines()[-1] == secret and "already registered" in second.output
        other_site = runner.invoke(webhooks_app, ["create", "--url", url, "--site", "plant-b"])
        assert other_site.exit_code != 0 and "registered for site 'plant-a'" in _flat(other_site.output)
        assert runner.invoke(webhooks_app, ["create", "--url", "not a url", "--site", "plant-a"]).exit_code != 0
        listed = runner.invoke(webhooks_app, ["list"], env={"COLUMNS": "250"})
        assert listed.exit_code == 0 and secret not in listed.output and "plant-a" in listed.output
        subscription_id = first.output.split("subscription: ")[1].split()[0]
        rotated = runner.invoke(webhooks_app, ["rotate", subscription_id, "--overlap-hours", "2"])
        assert rotated.exit_code == 0 and rotated.output.strip().splitlines()[-1] != secret
        with psycopg.connect(postgres_url) as conn:
            audited = conn.execute(
                "SELECT action, details->>'site_id' FROM audit_log WHERE details->>'url' = %s ORDER BY audit_id",
                (url,)).fetchall()
            overlap = conn.execute(
                "SELECT previous_secret = %s, previous_secret_expires_at - rotated_at FROM webhook_subscriptions"
                " WHERE url = %s", (secret, url)).fetchone()
        assert audited == [("webhook.create", "plant-a"), ("webhook.rotate", "plant-a")], "one create, one rotate"
        assert overlap is not None and overlap[0] is True and abs(overlap[1].total_seconds() - 7200) < 5
    finally:
        get_settings.cache_clear()


async def test_a_batch_may_name_only_a_url_registered_for_its_site(db_pool):
    url = f"http://127.0.0.1:9/{uuid.uuid4().hex[:8]}"
    async with db_pool.connection() as conn:
        assert await registered_webhook(conn, url, "plant-a") is None
        # A URL the worker met first (an operator's setting, or a batch before registration) is not registered.
        await ensure_subscription(conn, url)
        assert await registered_webhook(conn, url, "plant-a") is None
        with pytest.raises(AddressRefused, match="loopback"):
            await register_webhook(conn, url, "plant-a", AddressPolicy())
        subscription, created = await register_webhook(conn, url, "plant-a", LOOPBACK)
        assert created and subscription.site_id == "plant-a" and subscription.registered_at is not None
        found = await registered_webhook(conn, url, "plant-a")
        assert found is not None and found.subscription_id == subscription.subscription_id
        assert await registered_webhook(conn, url, "plant-b") is None
        assert await registered_webhook(conn, url + "/other", "plant-a") is None
        assert await registered_webhook(conn, "not a url", "plant-a") is None
        with pytest.raises(WebhookConflict):
            await register_webhook(conn, url, "plant-b", LOOPBACK)
        await set_disabled(conn, subscription.subscription_id, True)
        assert await registered_webhook(conn, url, "plant-a") is None, "a disabled webhook may not be named"


async def test_loopback_is_refused_at_delivery_unless_allowed(temporal_client, db_pool, task_queue,
                                                             public_only_worker):
    """Production's default: the receiver on 127.0.0.1 (and a name resolving there) gets nothing, the
    delivery fails without retrying, and neither the failure nor the log names the URL."""
    with Receiver([]) as receiver:
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            delivery_id = f"d-{uuid.uuid4().hex[:8]}"
            with pytest.raises(WorkflowFailureError) as failure:
                await deliver(temporal_client, task_queue, url, delivery_id)
            message = str(failure.value.cause.__cause__)
            assert "non-public address (loopback" in message and "127.0.0.1" not in message and "/hooks/" not in message
            rows = await _log_rows(db_pool, delivery_id)
            assert [r["attempt"] for r in rows] == [1], "a refused address is not retried"
            assert rows[0]["status_code"] is None and "loopback" in rows[0]["error"]
        assert receiver.requests == []


async def test_names_are_pinned_to_the_address_that_was_checked(temporal_client, db_pool, task_queue, webhook_worker):
    with Receiver([]) as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        result = await deliver(temporal_client, task_queue, url)
    assert result.status_code == 200
    headers, _ = receiver.requests[0]
    assert headers["host"] == f"localhost:{receiver.server.server_address[1]}", "the original name, not the address"


async def test_redirects_are_not_followed(temporal_client, db_pool, task_queue, webhook_worker):
    with Receiver([]) as target:

        def redirect(handler):
            handler.send_response(307)
            handler.send_header("Location", target.url)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with ScriptedServer(redirect) as redirecting:
            delivery_id = f"d-{uuid.uuid4().hex[:8]}"
            with pytest.raises(WorkflowFailureError) as failure:
                await deliver(temporal_client, task_queue, redirecting.url, delivery_id)
            assert redirecting.hits == 1, "a redirect is not retried"
        assert target.requests == [], "the signed body never goes where the redirect points"
    assert "follow no redirects" in str(failure.value.cause.__cause__)
    assert [(r["status_code"], r["error"]) for r in await _log_rows(db_pool, delivery_id)] == [(307, "HTTP 307")]


async def test_a_reply_is_read_only_a_few_kb_and_never_kept(temporal_client, db_pool, task_queue, webhook_worker):
    """A receiver that announces 100 MB and sends a trickle never holds the delivery: the activity reads
    at most MAX_REPLY_BYTES. A receiver's error text stays out of failures and logs."""
    release = threading.Event()

    def endless(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(100 * 2**20))
        handler.end_headers()
        handler.wfile.write(b"x" * (MAX_REPLY_BYTES * 4))
        handler.wfile.flush()
        release.wait(30)  # never sends the rest

    def chatty_error(handler):
        body = b"SECRET-INTERNAL-STACKTRACE " * 100
        handler.send_response(500)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    try:
        with ScriptedServer(endless) as server:
            started = time.monotonic()
            result = await deliver(temporal_client, task_queue, server.url,
                                   retry=WebhookRetry(maximum_attempts=1, request_timeout_s=8))
            assert result.status_code == 200 and time.monotonic() - started < 6
    finally:
        release.set()
    with ScriptedServer(chatty_error) as server:
        delivery_id = f"d-{uuid.uuid4().hex[:8]}"
        with pytest.raises(WorkflowFailureError) as failure:
            await deliver(temporal_client, task_queue, server.url, delivery_id,
                          WebhookRetry(initial_interval_s=0.1, maximum_attempts=2))
    history = await temporal_client.get_workflow_handle(webhook_workflow_id(delivery_id)).fetch_history()
    failures = [e.activity_task_failed_event_attributes.failure.message for e in history.events
                if e.HasField("activity_task_failed_event_attributes")]
    rows = await _log_rows(db_pool, delivery_id)
    assert [r["error"] for r in rows] == ["HTTP 500", "HTTP 500"]
    assert "SECRET-INTERNAL" not in history.to_json()
    for text in (str(failure.value.cause.__cause__), *failures):
        assert "HTTP 500" in text and "SECRET-INTERNAL" not in text and "/hooks/" not in text


async def test_a_rotated_secret_signs_alongside_the_new_one_for_the_overlap(temporal_client, db_pool, task_queue,
                                                                            webhook_worker):
    with Receiver([]) as receiver:
        async with db_pool.connection() as conn:
            old, _ = await register_webhook(conn, receiver.url, "plant-a", LOOPBACK)
            rotated = await rotate_secret(conn, old.subscription_id, overlap_s=3600)
        assert rotated is not None and rotated.signing_secrets() == [rotated.secret, old.secret]
        await deliver(temporal_client, task_queue, receiver.url)
        async with db_pool.connection() as conn:
            await rotate_secret(conn, old.subscription_id, overlap_s=0)  # leaked: the old one stops at once
            current = await get_subscription_by_url(conn, receiver.url)
        await deliver(temporal_client, task_queue, receiver.url)
    (first_headers, first_body), (second_headers, second_body) = receiver.requests
    signatures = first_headers["x-sightline-signature"]
    assert signatures == signature_header([rotated.secret, old.secret], first_body) and "," in signatures
    assert verify(old.secret, first_body, signatures) and verify(rotated.secret, first_body, signatures)
    assert current is not None and "," not in second_headers["x-sightline-signature"]
    assert verify(current.secret, second_body, second_headers["x-sightline-signature"])
    assert not verify(rotated.secret, second_body, second_headers["x-sightline-signature"])
    assert not verify(old.secret, first_body, "sha256=né,garbage"), "a malformed header is just a mismatch"
