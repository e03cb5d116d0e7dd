"""Seeding the records a deletion or a retention pass works on, straight into Postgres and the store (the
accept and classify paths have their own tests): batches and frames, predictions, review tasks, a drift
report, and a model version trained on a snapshot that names some of the frames."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg.types.json import Jsonb

from infra.db import DbPool
from infra.store import ObjectStore, put_frame, sha256_hex
from infra.tables import dataset_snapshots
from tests.frames import jpeg_frame
from vision.datasets import REVIEWED, BaseSetSpec, SnapshotEntry, SnapshotManifest, manifest_key
from vision.registry import ModelRegistry


@dataclass
class SeededFrame:
    frame_id: str
    batch_id: str
    sha256: str
    object_key: str


@dataclass
class SeededBatch:
    batch_id: str
    camera_id: str
    site_id: str
    frames: list[SeededFrame] = field(default_factory=list)


async def seed_batch(pool: DbPool, store: ObjectStore, camera_id: str, site_id: str, n: int, *,
                     age_days: float = 0.0, seed: int | None = None) -> SeededBatch:
    """A completed batch of `n` distinct frames, each with a prediction, recorded `age_days` ago."""
    tag = uuid.uuid4().hex[:8]
    batch_id = f"batch:{site_id}:{camera_id}:{tag}"
    at = datetime.now(UTC) - timedelta(days=age_days)
    base = seed if seed is not None else int(tag, 16) % 100_000
    batch = SeededBatch(batch_id, camera_id, site_id)
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count, accepted_count,"
            " created_at, updated_at, completed_at) VALUES (%s, %s, %s, %s, 'completed', %s, %s, %s, %s, %s)",
            (batch_id, camera_id, site_id, tag, n, n, at, at, at))
        for i in range(n):
            data = jpeg_frame(base * 100 + i, size=48)
            key = put_frame(store, data, "image/jpeg")
            frame = SeededFrame(f"{batch_id}:{i}", batch_id, sha256_hex(data), key)
            await conn.execute(
                "INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, content_type, size_bytes,"
                " status, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'image/jpeg', %s, 'accepted', %s, %s)",
                (frame.frame_id, batch_id, i, key, frame.sha256, len(data), at, at))
            await conn.execute(
                "INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, created_at)"
                " VALUES (%s, 'v-test', 'ok', 0.99, %s, %s)", (frame.frame_id, Jsonb({"ok": 0.99}), at))
            batch.frames.append(frame)
    return batch


async def seed_review_task(pool: DbPool, frame: SeededFrame, camera_id: str, site_id: str, *, decided: bool,
                           age_days: float = 0.0, review_id: str | None = None) -> str:
    review_id = review_id or f"review:{frame.frame_id}:low_confidence"
    at = datetime.now(UTC) - timedelta(days=age_days)
    async with pool.connection() as conn:
        await conn.execute(
            """INSERT INTO review_tasks (review_id, version, run_id, frame_id, batch_id, object_key, camera_id, site_id,
                   reason, predicted_label, confidence, classes, status, priority, created_at, decided_at, final_label)
               VALUES (%s, 1, '', %s, %s, %s, %s, %s, 'low_confidence', 'ok', 0.4, %s, %s, 1, %s, %s, %s)""",
            (review_id, frame.frame_id, frame.batch_id, frame.object_key, camera_id, site_id, ["ok", "defect"],
             "decided" if decided else "pending", at, at if decided else None, "ok" if decided else None))
    return review_id


async def seed_drift_report(pool: DbPool, store: ObjectStore, site_id: str, *, age_days: float = 0.0,
                            window_days: float = 1.0) -> tuple[str, str]:
    """A drift report whose current window covers the last `window_days` before its check."""
    report_id = f"drift:{site_id}:{uuid.uuid4().hex[:8]}"
    checked = datetime.now(UTC) - timedelta(days=age_days)
    html_key = f"drift-reports/{report_id.replace(':', '-')}.html"
    store.put(html_key, b"<html>features of the current window</html>", "text/html")
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO drift_reports (report_id, site_id, status, current_from, current_until, html_key, checked_at)"
            " VALUES (%s, %s, 'no_drift', %s, %s, %s, %s)",
            (report_id, site_id, checked - timedelta(days=window_days), checked + timedelta(minutes=1), html_key,
             checked))
    return report_id, html_key


async def seed_trained_model(pool: DbPool, store: ObjectStore, registry: ModelRegistry,
                             frames: list[SeededFrame]) -> tuple[str, str]:
    """A registered version trained on a snapshot whose reviewed entries are these frames: (version, snapshot)."""
    sid = f"snap-{uuid.uuid4().hex[:16]}"
    entries = [SnapshotEntry(f.object_key, f.sha256, "ok", REVIEWED, "train", f.frame_id) for f in frames]
    body = SnapshotManifest(sid, BaseSetSpec(), 10, entries).to_json()
    key = manifest_key(sid)
    store.put(key, body, "application/json")
    async with pool.connection() as conn:
        await dataset_snapshots.upsert(conn, sid, key, sha256_hex(body), {}, None)
    version, number = registry.reserve_version()
    registry.register(version, number, "mobilenet_v3_small", f"models/{version}/manifest.json", "0" * 64,
                      dataset_snapshot_id=sid, created_by="test")
    return version, sid


async def exists(pool: DbPool, sql: str, *params: object) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    return int(next(iter(row.values()))) if row else 0
