"""RetrainingWorkflow end to end (the `micro` profile: seconds of training): a snapshot of the base set
and the reviewed labels, training on the training queue, evaluation next to production, a registered and
signed candidate with its model card; a second trigger for the same snapshot starts nothing; a cancel
stops training within seconds; a training worker killed mid-run is replaced and the run resumes from its
last checkpoint, running fewer epochs than it planned."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from api.services.retraining import RetrainingService
from infra.settings import Settings
from infra.tables.api_keys import authenticate_key
from tests.history_recorder import HistoryRecorder
from tests.loop_support import loop_workers, one_row, record_reviewed_frames, session_signing_key, shifted_frames
from tests.polling import eventually
from tests.review_support import fetch_all
from vision.artifacts import CARD, NOVELTY, ONNX, REFERENCE, WEIGHTS, load_verified
from vision.datasets import read_manifest
from vision.signatures import trusted_keys_from_settings
from workflows.retraining_types import (
    PROGRESS_QUERY,
    Outcome,
    RetrainingProgress,
    RetrainingResult,
    RetrainingTrigger,
)

pytest_plugins = ["tests.serving_fixtures", "tests.loop_support"]


def _settings(settings_factory, model_store, **overrides) -> Settings:
    values = dict(object_store_url=f"file://{model_store.root}", model_signing_key=session_signing_key(),
                  retraining_profile="micro", retraining_epochs=2, retraining_reviewed_holdout_pct=25,
                  retraining_min_improvement=0.0, training_heartbeat_timeout_s=10)
    return settings_factory(**{**values, **overrides})


@pytest_asyncio.fixture
async def service(temporal_client, db_pool, model_store, registry, production_model,
                  settings_factory) -> AsyncIterator[RetrainingService]:
    settings = _settings(settings_factory, model_store)
    async with loop_workers(temporal_client, db_pool, model_store, settings, registry):
        yield RetrainingService(db_pool, model_store, temporal_client, settings)


async def test_a_retraining_run_registers_a_signed_candidate_with_its_card(
        service, temporal_client: Client, db_pool, model_store, registry, production_model,
        loop_history: HistoryRecorder):
    await record_reviewed_frames(db_pool, model_store, shifted_frames("retrain-line", 16, seed=71))
    previous_candidate = registry.aliases().get("candidate")
    triggered = await service.trigger({}, RetrainingTrigger("manual", "tests", note="end to end"))
    assert triggered.started and triggered.reviewed_frames >= 16
    handle = temporal_client.get_workflow_handle(triggered.workflow_id, result_type=RetrainingResult)
    try:
        result = await asyncio.wait_for(handle.result(), 600)
    finally:
        if registry.aliases().get("candidate") != previous_candidate:  # other tests expect the alias as it was
            registry.set_alias("candidate", previous_candidate, "tests", "restore after the retraining test")
    await loop_history(handle, "retraining_completed")

    assert result.snapshot_id == triggered.snapshot_id and result.epochs_run == 2 and result.resumed_from_epoch == 0
    assert result.evaluation.production_version == production_model.version
    assert set(result.evaluation.candidate) == set(result.evaluation.production) == {"holdout", "reviewed_holdout"}
    assert result.outcome in (Outcome.CANDIDATE, Outcome.REJECTED) and result.reason

    version = registry.get(result.candidate_version)
    assert version is not None and version.parent_version == production_model.version
    assert version.training_run_id == triggered.workflow_id and version.signature_key_id
    # Signed, sha256-checked, and complete: weights, ONNX with the novelty head, statistics, reference, card.
    manifest, files = load_verified(model_store, version.manifest_key, version.manifest_sha256,
                                    (WEIGHTS, ONNX, NOVELTY, REFERENCE, CARD),
                                    trusted_keys=trusted_keys_from_settings(service.settings))
    assert manifest.novelty["percentile"] == 99.5 and manifest.dataset_snapshot_id == triggered.snapshot_id
    assert json.loads(files[CARD])["training"]["run_id"] == triggered.workflow_id
    card = version.card
    assert card["data"]["snapshot_id"] == triggered.snapshot_id
    assert card["data"]["counts"]["by_source"]["reviewed"] >= 16 and "by_class" in card["data"]["counts"]
    assert card["parameters"]["epochs"] == 2 and card["parameters"]["profile"] == "micro"
    assert card["reason"] == {"kind": "manual", "drift_report_id": None, "requested_by": "tests",
                              "note": "end to end"}
    assert card["parent_version"] == production_model.version and card["created_by"].startswith("retraining ")
    assert set(card["metrics"]) == {"holdout", "reviewed_holdout"}
    assert card["evaluation"]["production_version"] == production_model.version

    run = await one_row(db_pool, "SELECT * FROM retraining_runs WHERE workflow_id = %s", triggered.workflow_id)
    assert run["status"] == "completed" and run["candidate_version"] == version.version
    assert run["outcome"] == result.outcome and run["epochs_run"] == 2
    snapshot = await one_row(db_pool, "SELECT * FROM dataset_snapshots WHERE snapshot_id = %s",
                               triggered.snapshot_id)
    rebuilt = read_manifest(model_store, snapshot["manifest_key"], snapshot["manifest_sha256"])
    assert rebuilt.counts()["by_source"] == card["data"]["counts"]["by_source"]
    if result.outcome == Outcome.CANDIDATE:
        history = registry.alias_history("candidate")
        assert any(c.to_version == version.version and c.reason == result.reason for c in history)

    progress = await handle.query(PROGRESS_QUERY, result_type=RetrainingProgress)
    assert progress.phase == "done" and progress.candidate_version == version.version
    assert progress.training.epoch == 2 and progress.training.loss is not None

    # The same snapshot again: the run exists, nothing starts.
    again = await service.trigger({}, RetrainingTrigger("manual", "tests", note="again"))
    assert again.workflow_id == triggered.workflow_id and again.started is False


async def test_a_cancel_stops_training_within_seconds(service, temporal_client: Client, db_pool, model_store,
                                                      api_keys, loop_history: HistoryRecorder):
    await record_reviewed_frames(db_pool, model_store, shifted_frames("cancel-line", 4, seed=72))
    triggered = await service.trigger({"epochs": 50}, RetrainingTrigger("manual", "tests", note="to cancel"))
    handle = temporal_client.get_workflow_handle(triggered.workflow_id)

    async def training() -> RetrainingProgress | None:
        _, progress = await service.progress(triggered.workflow_id)
        return progress if progress and progress.training.step >= 2 else None

    progress = await eventually(training, timeout=300, message="training to report progress")
    assert progress.phase == "training" and progress.training.epochs == 50
    assert progress.training.loss is not None and progress.training.eta_s is not None
    async with db_pool.connection() as conn:
        caller = await authenticate_key(conn, api_keys["ml-engineer"])
    assert caller is not None
    started = time.monotonic()
    assert await service.cancel(triggered.workflow_id, caller)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 60)
    stopped_in = time.monotonic() - started
    assert isinstance(failed.value.cause, CancelledError)
    assert stopped_in < 10, f"training took {stopped_in:.1f}s to stop"
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    run = await one_row(db_pool, "SELECT status, phase FROM retraining_runs WHERE workflow_id = %s",
                          triggered.workflow_id)
    assert run == {"status": "cancelled", "phase": "training"}
    audit = await fetch_all(db_pool, "SELECT action, details FROM audit_log WHERE workflow_id = %s",
                            triggered.workflow_id)
    assert [a["action"] for a in audit] == ["retraining.cancel"]
    await loop_history(handle, "retraining_cancelled")


def _start_training_worker(settings: Settings, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SIGHTLINE_DATABASE_URL": settings.database_url,
        "SIGHTLINE_OBJECT_STORE_URL": settings.resolved_object_store_url,
        "SIGHTLINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "SIGHTLINE_TRAINING_TASK_QUEUE": settings.training_task_queue,
        "SIGHTLINE_MODEL_SIGNING_KEY": settings.model_signing_key,
        "SIGHTLINE_DATA_DIR": str(settings.resolved_data_dir),
        "SIGHTLINE_LOG_JSON": "true",
    }
    return subprocess.Popen([sys.executable, "-m", "workers.training"], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


async def test_a_killed_training_worker_resumes_from_its_last_checkpoint(
        temporal_client: Client, db_pool, model_store, registry, production_model, settings_factory, tmp_path,
        loop_history: HistoryRecorder):
    settings = _settings(settings_factory, model_store, retraining_epochs=8, training_heartbeat_timeout_s=4,
                         retraining_min_improvement=1.0)  # rejected: no alias moves
    await record_reviewed_frames(db_pool, model_store, shifted_frames("resume-line", 4, seed=73))
    first = _start_training_worker(settings, tmp_path / "training-1.log")
    second = None
    try:
        async with loop_workers(temporal_client, db_pool, model_store, settings, registry, training=False):
            service = RetrainingService(db_pool, model_store, temporal_client, settings)
            triggered = await service.trigger({"batch_size": 32}, RetrainingTrigger("cli", "tests", note="kill"))
            prefix = f"training/{triggered.workflow_id}/checkpoints/"

            async def checkpointed() -> list[str]:
                assert first.poll() is None, (tmp_path / "training-1.log").read_text()[-3000:]
                return await asyncio.to_thread(model_store.list, prefix)

            await eventually(checkpointed, timeout=300, interval=0.05, message="the first epoch's checkpoint")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            killed_at = sorted(model_store.list(prefix))
            assert killed_at and not any(k.endswith("epoch-0008.pt") for k in killed_at), killed_at

            second = _start_training_worker(settings, tmp_path / "training-2.log")
            handle = temporal_client.get_workflow_handle(triggered.workflow_id, result_type=RetrainingResult)
            result = await asyncio.wait_for(handle.result(), 600)
        assert result.resumed_from_epoch >= 1, (tmp_path / "training-2.log").read_text()[-3000:]
        assert result.epochs_run == 8 - result.resumed_from_epoch < 8
        assert result.outcome == Outcome.REJECTED
        assert "resuming from checkpoint" in (tmp_path / "training-2.log").read_text()
        run = await one_row(db_pool, "SELECT status, resumed_from_epoch, epochs_run FROM retraining_runs"
                              " WHERE workflow_id = %s", triggered.workflow_id)
        assert run == {"status": "completed", "resumed_from_epoch": result.resumed_from_epoch,
                       "epochs_run": result.epochs_run}
        await loop_history(handle, "retraining_resumed_after_kill")
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
