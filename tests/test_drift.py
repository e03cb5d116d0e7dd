"""Drift checks: Evidently on quality features, predictions and novelty, production's reference against
a site's last frames. The same seeds both ways: normal frames give no drift, shifted ones (a dim line,
defects that look different) do; the report goes to the object store and Postgres, the policy decides
and says why, and a drift that does not retrain sends a signed `drift.detected`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client

from infra.settings import Settings
from infra.webhook_signatures import SIGNATURE_HEADER, verify
from tests.history_recorder import HistoryRecorder
from tests.loop_support import (
    loop_workers,
    one_row,
    record_site_frames,
    served_rows,
    session_signing_key,
    shifted_frames,
)
from tests.review_support import fetch_all
from tests.webhook_receiver import Receiver
from vision.camera import generate_frames
from vision.drift import check_drift
from workflows.drift_check import DriftCheckWorkflow
from workflows.drift_types import (
    DriftCheckInput,
    DriftCheckResult,
    DriftDecision,
    DriftStatus,
    drift_check_workflow_id,
)

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures", "tests.loop_support"]

SEED = 2024


@pytest.fixture(scope="module")
def normal_rows(trained_model):
    return served_rows(trained_model, generate_frames("drift-line", 240, seed=SEED))


@pytest.fixture(scope="module")
def shifted_rows(trained_model):
    return served_rows(trained_model, shifted_frames("drift-line", 240, seed=SEED))


def test_normal_frames_do_not_drift_and_shifted_ones_do(trained_model, normal_rows, shifted_rows):
    reference = trained_model.reference
    normal = check_drift(reference, normal_rows, column_share=0.3)
    assert not normal.drifted, [c for c in normal.columns if c.drifted]
    shifted = check_drift(reference, shifted_rows, column_share=0.3)
    assert shifted.drifted and shifted.drift_share >= 0.5
    drifted = {c.column for c in shifted.columns if c.drifted}
    assert {"brightness", "r_mean", "novelty", "unfamiliar"} <= drifted
    assert shifted.unfamiliar_rate_current is not None and shifted.unfamiliar_rate_current > 0.5
    assert b"<html" in shifted.html[:2000].lower()


@pytest_asyncio.fixture
async def drift_env(temporal_client: Client, db_pool, model_store, registry, production_model,
                    settings_factory) -> AsyncIterator[tuple[Settings, Receiver]]:
    with Receiver([]) as receiver:
        settings = settings_factory(
            object_store_url=f"file://{model_store.root}", model_signing_key=session_signing_key(),
            drift_min_frames=100, drift_window_frames=200, drift_webhook_url=receiver.url,
            webhook_allowed_networks=["127.0.0.0/8"], retraining_min_new_labels=1_000_000)
        async with loop_workers(temporal_client, db_pool, model_store, settings, registry, training=False):
            yield settings, receiver


async def _check(client: Client, settings: Settings, site: str) -> tuple[str, DriftCheckResult]:
    workflow_id = drift_check_workflow_id(site, uuid.uuid4().hex[:8])
    handle = await client.start_workflow(DriftCheckWorkflow.run, DriftCheckInput(site, "tests"), id=workflow_id,
                                         task_queue=settings.orchestration_task_queue)
    return workflow_id, await asyncio.wait_for(handle.result(), 120)


async def test_a_drifted_site_is_reported_and_waits_for_labels(drift_env, temporal_client, db_pool, model_store,
                                                                production_model, normal_rows, shifted_rows,
                                                                loop_history: HistoryRecorder):
    settings, receiver = drift_env
    version = production_model.version
    calm, drifting = f"site-calm-{uuid.uuid4().hex[:6]}", f"site-shift-{uuid.uuid4().hex[:6]}"
    await record_site_frames(db_pool, calm, version, normal_rows)
    await record_site_frames(db_pool, drifting, version, normal_rows[:40])  # older frames, out of the window
    await record_site_frames(db_pool, drifting, version, shifted_rows)

    calm_id, calm_result = await _check(temporal_client, settings, calm)
    assert calm_result.status == DriftStatus.NO_DRIFT and calm_result.decision is None
    # Evidently runs on the drift queue, never on the orchestration workers that move batches along.
    history = await temporal_client.get_workflow_handle(calm_id).fetch_history()
    queues = {e.activity_task_scheduled_event_attributes.activity_type.name:
              e.activity_task_scheduled_event_attributes.task_queue.name
              for e in history.events if e.HasField("activity_task_scheduled_event_attributes")}
    assert queues["run_drift_check"] == settings.drift_task_queue != settings.orchestration_task_queue
    await loop_history(temporal_client.get_workflow_handle(calm_id), "drift_check_no_drift")

    shift_id, result = await _check(temporal_client, settings, drifting)
    assert result.status == DriftStatus.DRIFT
    assert result.decision == DriftDecision.WAIT_FOR_LABELS and "retraining needs 1000000" in (result.reason or "")
    await loop_history(temporal_client.get_workflow_handle(shift_id), "drift_check_waits_for_labels")

    report = await one_row(db_pool, "SELECT * FROM drift_reports WHERE report_id = %s", shift_id)
    assert report["status"] == "drift" and report["model_version"] == version
    assert report["current_frames"] == 200 and report["reference_frames"] == len(production_model_reference(
        model_store, production_model))
    assert report["decision"] == "wait_for_labels" and report["requested_by"] == "tests"
    html = model_store.get(report["html_key"])
    assert b"<html" in html[:500].lower() and b"brightness" in html and len(html) > 100_000
    columns = {r["column_name"]: r for r in await fetch_all(
        db_pool, "SELECT * FROM drift_report_columns WHERE report_id = %s", shift_id)}
    assert columns["brightness"]["drifted"] and columns["brightness"]["stattest"] == "ks"
    assert columns["unfamiliar"]["column_type"] == "categorical"
    decision = await one_row(db_pool, "SELECT * FROM retraining_decisions WHERE report_id = %s", shift_id)
    assert decision["decision"] == "wait_for_labels" and decision["labels_required"] == 1_000_000

    # The signed drift.detected webhook, delivered by its own workflow.
    assert result.webhook_workflow_id
    await asyncio.wait_for(temporal_client.get_workflow_handle(result.webhook_workflow_id).result(), 60)
    headers, body = receiver.requests[-1]
    payload = json.loads(body)
    assert payload["event"] == "drift.detected" and payload["data"]["report_id"] == shift_id
    assert payload["data"]["decision"] == "wait_for_labels" and "brightness" in payload["data"]["drifted_columns"]
    secret = (await one_row(db_pool, "SELECT secret FROM webhook_subscriptions WHERE url = %s",
                              receiver.url))["secret"]
    assert verify(secret, body, headers[SIGNATURE_HEADER.lower()])


def production_model_reference(store, version) -> list:
    from vision.artifacts import REFERENCE, load_verified

    _, files = load_verified(store, version.manifest_key, version.manifest_sha256, (REFERENCE,))
    return json.loads(files[REFERENCE])


async def test_too_few_frames_is_insufficient_data(drift_env, temporal_client, db_pool, production_model,
                                                   normal_rows):
    settings, _ = drift_env
    site = f"site-few-{uuid.uuid4().hex[:6]}"
    await record_site_frames(db_pool, site, production_model.version, normal_rows[:20])
    _, result = await _check(temporal_client, settings, site)
    assert result.status == DriftStatus.INSUFFICIENT_DATA and result.decision is None


async def test_the_scheduled_sweep_checks_every_active_site(drift_env, temporal_client, db_pool, production_model,
                                                            normal_rows):
    settings, _ = drift_env
    site = f"site-sweep-{uuid.uuid4().hex[:6]}"
    await record_site_frames(db_pool, site, production_model.version, normal_rows[:120])
    handle = await temporal_client.start_workflow(DriftCheckWorkflow.run, DriftCheckInput("", "schedule"),
                                                  id=f"drift-sweep-{uuid.uuid4().hex[:8]}",
                                                  task_queue=settings.orchestration_task_queue)
    result = await asyncio.wait_for(handle.result(), 180)
    mine = [r for r in result.sites if r.site_id == site]
    assert len(mine) == 1 and mine[0].status == DriftStatus.NO_DRIFT
