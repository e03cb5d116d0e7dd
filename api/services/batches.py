"""Frame batches: accepting a submission (store the frames, record the batch, start its workflow, audit)
and reading batches back with their frames and predictions."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

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
from api.submission import Submission
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.store import ObjectStore, put_frames
from infra.tables import batches, frames
from infra.tables.api_keys import Principal
from infra.tables.batches import Scope
from infra.tables.webhook_subscriptions import registered_webhook
from workflows import search_attributes as sa
from workflows.batch_types import (
    WORKFLOW_NAME,
    BatchStatus,
    FrameBatchInput,
    RoutingRules,
    SubmittedFrame,
    batch_workflow_id,
    make_frame_id,
)

# Frames of a batch are stored in this many groups at once (see BatchService.submit).
STORE_LANES = 8


class InvalidCursor(ValueError):
    """A page cursor this API did not hand out."""


class AdmissionRefused(Exception):
    """The site has as many batches in flight as it may: the caller should come back shortly."""

    def __init__(self, site_id: str, retry_after_s: int) -> None:
        super().__init__(f"site {site_id!r} has the most batches in flight it may have; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class UnregisteredWebhook(Exception):
    """A batch may send alerts only to a URL registered for its site."""

    def __init__(self, site_id: str) -> None:
        super().__init__(f"the webhook URL is not registered for site {site_id!r} (or is disabled): register it "
                         "with `sightline webhooks create --url URL --site SITE` first")


def scope_of(caller: Principal) -> Scope:
    return Scope(tuple(caller.site_ids), tuple(caller.camera_ids))


class ConflictingResubmission(Exception):
    """An idempotency key already used for other frames."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id} exists with other frames: an idempotency key names one request; "
                         "use a new key for new frames")


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
                webhook_url: str | None, frame_count: int = 0) -> FrameBatchInput:
    """A batch's workflow input: `frames` for a batch that records its own (a camera stream's),
    `frame_count` for one the API recorded."""
    return FrameBatchInput(batch_id, camera_id, site_id, frames, chunk_size=settings.classify_chunk_size,
                           webhook_url=webhook_url, rules=routing_rules(settings),
                           inference_task_queue=settings.inference_task_queue, frame_count=frame_count,
                           durable_path=True)


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
                                quality=row["p_quality"] or {}, novelty=row["p_novelty"],
                                unfamiliar=row["p_unfamiliar"], created_at=row["p_created_at"])
    return FrameResult(**{k: v for k, v in row.items() if not k.startswith("p_")}, prediction=prediction)


class BatchService:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    # -- accepting -----------------------------------------------------------------------------
    async def submit(self, submission: Submission, caller: Principal) -> BatchAccepted:
        """Accept a batch: record it with its frames and its audit row in one transaction, store the
        frames concurrently, start its workflow. `created` is False when the idempotency key names an
        existing batch of the same frames: nothing new is recorded or started, unless that batch failed,
        which then runs again (its status says 'received')."""
        s = submission
        batch_id = batch_workflow_id(s.camera_id, s.idempotency_key)
        frames_in = s.frames()
        fingerprint = s.fingerprint()
        async with self.pool.connection() as conn, conn.transaction():
            if s.webhook_url and await registered_webhook(conn, s.webhook_url, s.site_id) is None:
                raise UnregisteredWebhook(s.site_id)
            row = await batches.admit(conn, batch_id=batch_id, camera_id=s.camera_id, site_id=s.site_id,
                                      idempotency_key=s.idempotency_key, frame_count=len(frames_in),
                                      webhook_url=s.webhook_url, fingerprint=fingerprint,
                                      max_in_flight=self.settings.max_batches_in_flight_per_site)
            if row is None:
                raise AdmissionRefused(s.site_id, self.settings.admission_retry_after_s)
            created = bool(row["created"])
            if not created and (row["request_fingerprint"] or fingerprint) != fingerprint:
                raise ConflictingResubmission(batch_id)
            rerun = row["status"] == BatchStatus.FAILED  # the same request again: run the failed batch again
            if rerun:
                row = await batches.reopen_failed(conn, batch_id) or row
            if created:
                sha = {u.object_key: u.sha256 for u in s.uploads or []}
                await frames.insert(conn, batch_id, [
                    frames.NewFrame(make_frame_id(batch_id, i), i, f.object_key, f.filename, f.content_type,
                                    f.size_bytes, sha.get(f.object_key, "")) for i, f in enumerate(frames_in)])
            # A resubmission is audited too: who retried what, and that it changed nothing.
            await record_audit(conn, caller, "batch.create", f"batches/{batch_id}", workflow_id=batch_id,
                               details={"frames": len(frames_in), "created": created})
        if not created and row["status"] != BatchStatus.RECEIVED:
            return self._accepted(row, created=False)
        # New, or still 'received' because the request that recorded it died before its workflow
        # started: store and start (again); both steps are idempotent.
        if s.uploads:
            # A few lanes of frames, each stored in one thread: the round trips of a network store
            # still overlap, without a thread hand-off per frame. Keys were computed from these bytes.
            lanes = [s.uploads[i::STORE_LANES] for i in range(min(STORE_LANES, len(s.uploads)))]
            await asyncio.gather(*(asyncio.to_thread(put_frames, self.store,
                                                     [(u.object_key, u.data, u.content_type) for u in lane])
                                   for lane in lanes))
        await self.temporal.start_workflow(
            WORKFLOW_NAME,
            batch_input(self.settings, batch_id, s.camera_id, s.site_id, [], s.webhook_url, len(frames_in)),
            id=batch_id,
            task_queue=self.settings.orchestration_task_queue,
            # A concurrent request may have started it first: the start is idempotent. A closed run of
            # this id is started again only if it failed (the batch was reopened above).
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=sa.at_start(s.camera_id, s.site_id, BatchStatus.RECEIVED.value),
        )
        if created:
            BATCHES_SUBMITTED.inc()
            FRAMES_SUBMITTED.inc(len(frames_in))
        return self._accepted(row, created=created, rerun=rerun)

    def _accepted(self, row: Row, created: bool, rerun: bool = False) -> BatchAccepted:
        return BatchAccepted(batch_id=row["batch_id"], workflow_id=row["batch_id"], status=row["status"],
                             frame_count=row["frame_count"], created=created, rerun=rerun,
                             temporal_ui_url=self.settings.workflow_ui_url(row["batch_id"]))

    # -- reading -------------------------------------------------------------------------------
    async def _row(self, batch_id: str, caller: Principal | None = None) -> Row | None:
        """The batch's row; None too when the caller's scope does not cover it (whether it exists is
        not for a key of another site to learn)."""
        async with self.pool.connection() as conn:
            row = await batches.get(conn, batch_id)
        if row is not None and caller is not None and caller.scope_refusal(row["site_id"], row["camera_id"]):
            return None
        return row

    def _summary(self, row: Row) -> dict[str, Any]:
        done = row["completed_at"]
        return {**row, "duration_s": (done - row["created_at"]).total_seconds() if done else None,
                "temporal_ui_url": self.settings.workflow_ui_url(row["batch_id"])}

    async def page(self, caller: Principal, *, camera_id: str | None, site_id: str | None, status: str | None,
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
                                      limit=limit + 1, within=scope_of(caller))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1]["created_at"].isoformat(), rows[-1]["batch_id"]]) if more else None
        return BatchPage(items=[BatchSummary(**self._summary(r)) for r in rows], next_cursor=next_cursor)

    async def detail(self, batch_id: str, caller: Principal) -> BatchDetail | None:
        row = await self._row(batch_id, caller)
        if row is None:
            return None
        async with self.pool.connection() as conn:
            frame_rows = await frames.with_latest_prediction(conn, batch_id)
        return BatchDetail(**self._summary(row), frames=[_frame_result(r) for r in frame_rows])

    async def predictions(self, batch_id: str, caller: Principal, limit: int,
                          cursor: str | None) -> PredictionPage | None:
        if await self._row(batch_id, caller) is None:
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
