"""Helpers of the loop's tests (drift checks, retraining): workers for a test's task queues, frames of
a site with the predictions serving would have recorded, reviewed labels, the session's signing key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from temporalio.client import Client
from temporalio.worker import Worker

from infra.db import DbPool
from infra.settings import Settings, get_settings
from infra.store import ObjectStore, put_frame, sha256_hex
from tests.history_recorder import HistoryRecorder
from vision.camera import Conditions, GeneratedFrame, generate_frames
from vision.registry import ModelRegistry
from vision.signatures import KEY_FILE, signer_from_settings
from vision.training import TrainingResult, reference_rows
from workers.drift import drift_worker
from workers.loop import LOOP_WORKFLOWS, loop_activities
from workers.orchestration import WORKFLOW_RUNNER
from workers.training import training_worker
from workers.webhooks import webhook_worker

SHIFT = Conditions(brightness=0.65, defect_style="changed")


def session_signing_key() -> str:
    """The PEM of the key the session's serving fixtures signed the production model with (the default
    key of this process's settings), so a test's own settings trust and extend the same registry."""
    settings = get_settings()
    signer_from_settings(settings)  # generated on first use
    return (settings.resolved_data_dir / KEY_FILE).read_text()


@asynccontextmanager
async def loop_workers(client: Client, pool: DbPool, store: ObjectStore, settings: Settings,
                       registry: ModelRegistry, training: bool = True) -> AsyncIterator[None]:
    """The loop's workflows and activities on the settings' orchestration queue, the webhook worker
    beside it (where drift.detected goes), the drift worker on its drift queue and the training worker
    on its training queue."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(Worker(
            client, task_queue=settings.orchestration_task_queue, workflows=LOOP_WORKFLOWS,
            workflow_runner=WORKFLOW_RUNNER, activities=loop_activities(pool, store, settings, registry),
        ))
        await stack.enter_async_context(webhook_worker(client, pool, settings))
        await stack.enter_async_context(drift_worker(client, pool, store, settings, registry))
        if training:
            await stack.enter_async_context(training_worker(client, pool, store, settings, registry))
        yield


def served_rows(trained: TrainingResult, frames: Sequence[GeneratedFrame]) -> list[dict[str, Any]]:
    """What serving records for these frames (quality, label, confidence, novelty, unfamiliar)."""
    import numpy as np

    from vision.decode import decode_frame

    p = trained.processing
    pixels = np.stack([p.resize(decode_frame(f.jpeg()).pixels) for f in frames])
    assert trained.novelty is not None
    return reference_rows(trained.model, p, trained.novelty, pixels)


async def record_site_frames(pool: DbPool, site_id: str, model_version: str, rows: Sequence[dict[str, Any]],
                             camera_id: str = "cam-drift") -> str:
    """One batch of the site's frames with their predictions, as the batch path records them."""
    batch_id = f"batch-{camera_id}-{uuid.uuid4().hex[:10]}"
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count)"
            " VALUES (%s, %s, %s, %s, 'completed', %s)", (batch_id, camera_id, site_id, batch_id, len(rows)))
        for i, row in enumerate(rows):
            frame_id = f"{batch_id}:{i:04d}"
            await conn.execute(
                "INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, size_bytes, status)"
                " VALUES (%s, %s, %s, %s, %s, 1000, 'accepted')",
                (frame_id, batch_id, i, f"frames/sha256/00/{uuid.uuid4().hex * 2}", uuid.uuid4().hex * 2))
            quality = {k: v for k, v in row.items() if k not in ("label", "confidence", "novelty", "unfamiliar")}
            await conn.execute(
                "INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, quality,"
                " novelty, unfamiliar) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (frame_id, model_version, row["label"], row["confidence"], Jsonb({row["label"]: row["confidence"]}),
                 Jsonb(quality), row["novelty"], row["unfamiliar"]))
    return batch_id


async def insert_stored_frames(conn: AsyncConnection[Any], store: ObjectStore, batch_id: str, site_id: str,
                               frames: Sequence[GeneratedFrame]) -> list[tuple[str, str, GeneratedFrame]]:
    """A completed batch of frames stored (content-addressed) and recorded: (frame id, object key, frame)
    for each, for the caller to add the review rows its test needs."""
    await conn.execute(
        "INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count)"
        " VALUES (%s, 'cam-reviewed', %s, %s, 'completed', %s)", (batch_id, site_id, batch_id, len(frames)))
    stored = []
    for i, frame in enumerate(frames):
        data = frame.jpeg()
        key = put_frame(store, data, "image/jpeg")
        frame_id = f"{batch_id}:{i:04d}"
        await conn.execute(
            "INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, size_bytes, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'accepted')",
            (frame_id, batch_id, i, key, sha256_hex(data), len(data)))
        stored.append((frame_id, key, frame))
    return stored


async def record_reviewed_frames(pool: DbPool, store: ObjectStore, frames: Sequence[GeneratedFrame],
                                 site_id: str = "plant-retrain") -> list[str]:
    """Frames stored and recorded, each with a decided review task whose final label is the frame's true
    class: what a reviewer's decisions leave behind."""
    batch_id = f"batch-reviewed-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    async with pool.connection() as conn, conn.transaction():
        stored = await insert_stored_frames(conn, store, batch_id, site_id, frames)
        for frame_id, key, frame in stored:
            await conn.execute(
                """INSERT INTO review_tasks (review_id, version, run_id, frame_id, batch_id, object_key, camera_id,
                       site_id, reason, predicted_label, confidence, classes, status, priority, final_label,
                       created_at, decided_at)
                   VALUES (%s, 1, 'r', %s, %s, %s, 'cam-reviewed', %s, 'low_confidence', 'ok', 0.5,
                           '{ok,scratch,dent,stain}', 'decided', 1, %s, %s, %s)""",
                (f"review-{frame_id}", frame_id, batch_id, key, site_id, frame.label, now, now))
    return [frame_id for frame_id, _, _ in stored]


def shifted_frames(camera_id: str, count: int, seed: int) -> list[GeneratedFrame]:
    return generate_frames(camera_id, count, seed, SHIFT)


@pytest.fixture
def loop_history(record_history: HistoryRecorder, monkeypatch: pytest.MonkeyPatch) -> HistoryRecorder:
    """The session's `record_history` (tests/conftest.py), which replays a history against the class
    the orchestration worker registers. Until workers.orchestration lists LOOP_WORKFLOWS, they are
    added to its list for the test, so the histories recorded now replay once they are registered."""
    from workers import orchestration

    missing = [w for w in LOOP_WORKFLOWS if w not in orchestration.WORKFLOWS]
    if missing:
        monkeypatch.setattr(orchestration, "WORKFLOWS", [*orchestration.WORKFLOWS, *missing])
    return record_history


async def one_row(pool: DbPool, sql: str, *params: object) -> dict[str, Any]:
    """The one row a query must return."""
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None, f"no row for {sql} {params}"
    return row
