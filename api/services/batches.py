"""Frame batches: accepting a submission (store the frames, record the batch, start its workflow, audit)
and reading batches back with their frames and predictions."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.audit import record_audit
from api.metrics import BATCHES_SUBMITTED, FRAMES_SUBMITTED
from api.schemas.batches import (
    BatchAccepted,
    BatchDetail,
    BatchPage,
    BatchSummary,
    FrameResult,
    Prediction,
    PredictionPage,
)
from api.submission import Submission, Upload
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.store import ObjectStore, put_frame
from infra.tables import batches, frames
from infra.tables.api_keys import Principal
from workflows import search_attributes as sa
from workflows.batch_types import (
    WORKFLOW_NAME,
    BatchStatus,
    FrameBatchInput,
    RoutingRules,
    SubmittedFrame,
    batch_workflow_id,
)


class InvalidCursor(ValueError):
    """A page cursor this API did not hand out."""


def routing_rules(settings: Settings) -> RoutingRules:
    """The routing rules in force now; a batch carries them in its input, so its history says which applied."""
    return RoutingRules(
        review_below=settings.review_confidence_threshold,
        qa_sample_rate=settings.qa_sample_rate,
        alert_at_or_above=settings.alert_confidence_threshold,
        ok_labels=list(settings.ok_labels),
        reviews_required=settings.reviews_required,
    )


def batch_input(settings: Settings, batch_id: str, camera_id: str, site_id: str, frames: list[SubmittedFrame],
                webhook_url: str | None) -> FrameBatchInput:
    return FrameBatchInput(batch_id, camera_id, site_id, frames, chunk_size=settings.classify_chunk_size,
                           webhook_url=webhook_url, rules=routing_rules(settings),
                           inference_task_queue=settings.inference_task_queue)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(cursor: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise InvalidCursor("cursor is not one this API returned") from None
    if not isinstance(values, list) or not values:
        raise InvalidCursor("cursor is not one this API returned")
    return values


def _frame_result(row: Row) -> FrameResult:
    prediction = None
    if row["p_label"] is not None:
        prediction = Prediction(model_version=row["p_model_version"], label=row["p_label"],
                                confidence=row["p_confidence"], probabilities=row["p_probabilities"] or {},
                                quality=row["p_quality"] or {}, created_at=row["p_created_at"])
    return FrameResult(**{k: v for k, v in row.items() if not k.startswith("p_")}, prediction=prediction)


class BatchService:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    # -- accepting -----------------------------------------------------------------------------
    async def submit(self, submission: Submission, caller: Principal) -> BatchAccepted:
        """Accept a batch: `created` is False when its idempotency key names an existing batch, in which
        case nothing new is stored or started."""
        s = submission
        batch_id = batch_workflow_id(s.camera_id, s.idempotency_key)
        existing = await self._row(batch_id)
        if existing and existing["status"] != BatchStatus.RECEIVED:
            await self._audit(caller, batch_id, s.frame_count, created=False)
            return self._accepted(existing, created=False)
        # A batch still 'received' may belong to a request that died before starting its workflow:
        # go through storing and starting again; both steps are idempotent.
        stored = s.stored if s.stored is not None else await asyncio.to_thread(self._store, s.uploads or [])
        async with self.pool.connection() as conn:
            row = await batches.insert_received(conn, batch_id=batch_id, camera_id=s.camera_id, site_id=s.site_id,
                                                idempotency_key=s.idempotency_key, frame_count=len(stored),
                                                webhook_url=s.webhook_url)
        created = row is not None
        # Start even when a concurrent request inserted the row first: USE_EXISTING makes the start
        # idempotent, and it repairs a request that died between the insert and the start.
        await self.temporal.start_workflow(
            WORKFLOW_NAME,
            batch_input(self.settings, batch_id, s.camera_id, s.site_id, stored, s.webhook_url),
            id=batch_id,
            task_queue=self.settings.orchestration_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.CAMERA, s.camera_id),
                SearchAttributePair(sa.SITE, s.site_id),
                SearchAttributePair(sa.STATUS, BatchStatus.RECEIVED.value),
            ]),
        )
        await self._audit(caller, batch_id, len(stored), created=created)
        if created:
            BATCHES_SUBMITTED.inc()
            FRAMES_SUBMITTED.inc(len(stored))
        else:
            row = await self._row(batch_id)
        assert row is not None  # inserted by this request or a concurrent one
        return self._accepted(row, created=created)

    def _store(self, uploads: list[Upload]) -> list[SubmittedFrame]:
        return [SubmittedFrame(put_frame(self.store, u.data, u.content_type), len(u.data), u.filename, u.content_type)
                for u in uploads]

    async def _audit(self, caller: Principal, batch_id: str, frame_count: int, created: bool) -> None:
        # A resubmission is audited too: who retried what, and that it changed nothing.
        async with self.pool.connection() as conn:
            await record_audit(conn, caller, "batch.create", f"batches/{batch_id}", workflow_id=batch_id,
                               details={"frames": frame_count, "created": created})

    def _accepted(self, row: Row, created: bool) -> BatchAccepted:
        return BatchAccepted(batch_id=row["batch_id"], workflow_id=row["batch_id"], status=row["status"],
                             frame_count=row["frame_count"], created=created,
                             temporal_ui_url=self.settings.workflow_ui_url(row["batch_id"]))

    # -- reading -------------------------------------------------------------------------------
    async def _row(self, batch_id: str) -> Row | None:
        async with self.pool.connection() as conn:
            return await batches.get(conn, batch_id)

    def _summary(self, row: Row) -> dict[str, Any]:
        done = row["completed_at"]
        return {**row, "duration_s": (done - row["created_at"]).total_seconds() if done else None,
                "temporal_ui_url": self.settings.workflow_ui_url(row["batch_id"])}

    async def page(self, *, camera_id: str | None, site_id: str | None, status: str | None,
                   created_after: datetime | None, created_before: datetime | None, limit: int,
                   cursor: str | None) -> BatchPage:
        before = None
        if cursor:
            values = decode_cursor(cursor)
            if len(values) != 2:
                raise InvalidCursor("cursor is not one this API returned")
            before = (str(values[0]), str(values[1]))
        async with self.pool.connection() as conn:
            rows = await batches.page(conn, camera_id=camera_id, site_id=site_id, status=status,
                                      created_after=created_after, created_before=created_before, before=before,
                                      limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1]["created_at"].isoformat(), rows[-1]["batch_id"]]) if more else None
        return BatchPage(items=[BatchSummary(**self._summary(r)) for r in rows], next_cursor=next_cursor)

    async def detail(self, batch_id: str) -> BatchDetail | None:
        row = await self._row(batch_id)
        if row is None:
            return None
        async with self.pool.connection() as conn:
            frame_rows = await frames.with_latest_prediction(conn, batch_id)
        return BatchDetail(**self._summary(row), frames=[_frame_result(r) for r in frame_rows])

    async def predictions(self, batch_id: str, limit: int, cursor: str | None) -> PredictionPage | None:
        if await self._row(batch_id) is None:
            return None
        try:
            after = int(decode_cursor(cursor)[0]) if cursor else -1
        except (TypeError, ValueError):
            raise InvalidCursor("cursor is not one this API returned") from None
        async with self.pool.connection() as conn:
            rows = await frames.with_latest_prediction(conn, batch_id, after_position=after, limit=limit + 1)
        more = len(rows) > limit
        items = [_frame_result(r) for r in rows[:limit]]
        return PredictionPage(items=items, next_cursor=encode_cursor([items[-1].position]) if more else None)
