"""Frame batches: accepting a submission (store the frames, record the batch, start its workflow, audit)
and reading batches back with their frames and predictions."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

from opentelemetry import trace
from temporalio.client import Client

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
from api.services import privacy
from api.services.models import ModelCatalog
from api.submission import Submission
from infra.db import DbConnection, DbPool, Row
from infra.settings import Settings
from infra.span_files import BATCH_ATTRIBUTE
from infra.store import LocalStore, ObjectStore, put_frames, redacted_key_parts
from infra.tables import batches, frames
from infra.tables.api_keys import Principal
from infra.tables.batches import Scope
from infra.tables.webhook_subscriptions import registered_webhook
from infra.telemetry import current_trace_id
from workflows.batch_start import batch_input, start_options
from workflows.batch_types import (
    DEFAULT_MODEL,
    WORKFLOW_NAME,
    BatchStatus,
    batch_workflow_id,
    legacy_batch_workflow_id,
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


class UnknownModel(Exception):
    """A batch named a model (alias or version) the registry does not have."""

    def __init__(self, model: str, why: str) -> None:
        super().__init__(f"model {model!r}: {why}")
        self.model = model
        self.why = why


def scope_of(caller: Principal) -> Scope:
    return Scope(tuple(caller.site_ids), tuple(caller.camera_ids))


class ConflictingResubmission(Exception):
    """An idempotency key already used for other frames."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id} exists with other frames: an idempotency key names one request; "
                         "use a new key for new frames")


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
                                unfamiliar=row["p_unfamiliar"], boxes=row.get("p_boxes"),
                                created_at=row["p_created_at"])
    return FrameResult(**{k: v for k, v in row.items() if not k.startswith("p_")}, prediction=prediction)


class BatchService:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings,
                 models: ModelCatalog) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings
        self.models = models  # where a batch's named model is looked up (the registry's resolve)

    # -- accepting -----------------------------------------------------------------------------
    async def submit(self, submission: Submission, caller: Principal) -> BatchAccepted:
        """Accept a batch: store its frames, record it with its frames and its audit row in one
        transaction, start its workflow. A resubmission (the idempotency key names a batch of this site
        already) is looked up first, so it gets its batch even while the site is at its limit:
        `created` is False, nothing new is recorded or started, unless that batch failed, which then runs
        again (its status says 'received'), or never got its workflow started, which starts now.

        Frames are stored before the row is written, so a store that fails (503) leaves no batch
        holding one of the site's slots; a row whose workflow could not be started (Temporal away, the
        API killed) is started by the client's resubmission or by the stale-batch sweep."""
        s = submission
        batch_id = batch_workflow_id(s.site_id, s.camera_id, s.idempotency_key)
        fingerprint = s.fingerprint()
        # The request's span names its batch: `sightline trace <batch id>` finds the trace by it.
        trace.get_current_span().set_attribute(BATCH_ATTRIBUTE, batch_id)
        if s.model != DEFAULT_MODEL and await self.models.version(s.model) is None:
            raise UnknownModel(s.model, "no model version or alias of that name (GET /v1/models lists them)")
        async with self.pool.connection() as conn:
            existing = await self._existing(conn, s)
            if existing is None:
                if s.webhook_url and await registered_webhook(conn, s.webhook_url, s.site_id) is None:
                    raise UnregisteredWebhook(s.site_id)
                # The atomic check is admit's; this one only spares storing frames that would be refused.
                if await batches.in_flight(conn, s.site_id) >= self.settings.max_batches_in_flight_per_site:
                    raise AdmissionRefused(s.site_id, self.settings.admission_retry_after_s)
        if existing is not None:
            return await self._resubmitted(existing, s, fingerprint, caller)
        redaction = await self._redact(s)
        await self._store(s)
        frames_in = s.frames()
        async with self.pool.connection() as conn, conn.transaction():
            row = await batches.admit(conn, batch_id=batch_id, camera_id=s.camera_id, site_id=s.site_id,
                                      idempotency_key=s.idempotency_key, frame_count=len(frames_in),
                                      webhook_url=s.webhook_url, fingerprint=fingerprint,
                                      max_in_flight=self.settings.max_batches_in_flight_per_site,
                                      trace_id=current_trace_id(), model=s.model)
            if row is not None and row["created"]:
                # sha256: of the bytes received (a redacted frame's too: it is the frame's identity).
                await frames.insert(conn, batch_id, [
                    frames.NewFrame(make_frame_id(batch_id, i), i, f.object_key, f.filename, f.content_type,
                                    f.size_bytes, sha, s.redaction_revision)
                    for i, (f, sha) in enumerate(zip(frames_in, s.received_digests(), strict=True))])
                details: dict[str, Any] = {"frames": len(frames_in), "created": True}
                if s.model != DEFAULT_MODEL:
                    details["model"] = s.model
                if redaction is not None:
                    details["redaction"] = redaction
                await record_audit(conn, caller, "batch.create", f"batches/{batch_id}", workflow_id=batch_id,
                                   details=details)
        if row is None or not row["created"]:
            # A concurrent request with the same key recorded it first (or took the last slot meanwhile).
            async with self.pool.connection() as conn:
                existing = await self._existing(conn, s)
            if existing is None:
                raise AdmissionRefused(s.site_id, self.settings.admission_retry_after_s)
            return await self._resubmitted(existing, s, fingerprint, caller)
        await self._start(row, s.webhook_url)
        BATCHES_SUBMITTED.inc()
        FRAMES_SUBMITTED.inc(len(frames_in))
        return self._accepted(row, created=True)

    async def _existing(self, conn: DbConnection, s: Submission) -> Row | None:
        """The batch this site's camera and idempotency key already name: under today's id, or under
        the id batches had before the site was part of it, when it is this site's (another site's batch
        of that old id is not this caller's to see, and today's id of this request is a new batch)."""
        rows = await batches.get_many(conn, [batch_workflow_id(s.site_id, s.camera_id, s.idempotency_key),
                                             legacy_batch_workflow_id(s.camera_id, s.idempotency_key)])
        mine = [r for r in rows if r["site_id"] == s.site_id and r["camera_id"] == s.camera_id]
        return min(mine, key=lambda r: r["batch_id"].count(":"), default=None) if mine else None

    async def _resubmitted(self, row: Row, s: Submission, fingerprint: str, caller: Principal) -> BatchAccepted:
        if (row["request_fingerprint"] or fingerprint) != fingerprint:
            raise ConflictingResubmission(row["batch_id"])
        batch_id = row["batch_id"]
        async with self.pool.connection() as conn, conn.transaction():
            rerun = row["status"] == BatchStatus.FAILED  # the same request again: run the failed batch again
            if rerun:
                row = await batches.reopen_failed(conn, batch_id) or row
            # A resubmission is audited too: who retried what, and that it changed nothing.
            await record_audit(conn, caller, "batch.create", f"batches/{batch_id}", workflow_id=batch_id,
                               details={"frames": s.frame_count, "created": False, "rerun": rerun})
        if row["status"] != BatchStatus.RECEIVED:
            return self._accepted(row, created=False)
        # Reopened, or still 'received' because the request that recorded it died before its workflow
        # started: store (a batch recorded before frames were stored first may lack some) and start;
        # both steps are idempotent. Frames are redacted as the recorded ones were (their revision), so
        # they land on the keys the frame rows name, whatever the camera's settings are now.
        await self._redact(s, recorded_batch=batch_id)
        await self._store(s)
        await self._start(row, s.webhook_url)
        return self._accepted(row, created=False, rerun=rerun)

    async def _redact(self, s: Submission, recorded_batch: str | None = None) -> dict[str, Any] | None:
        """Redact a multipart batch's frames in place when its camera has redaction on (or, for a batch
        recorded already, when its frames were recorded redacted); what ran, or None: stored as received,
        at no cost beyond a cached lookup. A JSON batch's camera was checked when it was read."""
        if not s.uploads or s.uploads[0].redaction_revision is not None:
            return None  # no files, or redacted already (a concurrent request recorded the batch first)
        if recorded_batch is None:
            settings = await privacy.in_force(self.pool, s.site_id, s.camera_id)
        else:
            async with self.pool.connection() as conn:
                keys = await frames.object_keys(conn, recorded_batch)
                parts = redacted_key_parts(keys[0]) if keys else None
                settings = await privacy.of_revision(conn, parts[1]) if parts else None
        if settings is None:
            return None
        return await privacy.redact_uploads(s.uploads, settings, self.settings.max_frame_pixels)

    async def _store(self, s: Submission) -> None:
        if not s.uploads:
            return  # a JSON batch's frames were copied to their content addresses when it was read
        # A network store: a few lanes of frames, each stored in one thread, so the round trips overlap
        # without a thread hand-off per frame. A directory: one group, made durable with one pair of
        # syncs (infra.store.LocalStore.put_many). Keys were computed from these bytes.
        lane_count = 1 if isinstance(self.store, LocalStore) else STORE_LANES
        lanes = [s.uploads[i::lane_count] for i in range(min(lane_count, len(s.uploads)))]
        await asyncio.gather(*(asyncio.to_thread(put_frames, self.store,
                                                 [(u.object_key, u.data, u.content_type) for u in lane])
                               for lane in lanes))

    async def _start(self, row: Row, webhook_url: str | None) -> None:
        batch_id, camera_id, site_id = row["batch_id"], row["camera_id"], row["site_id"]
        await self.temporal.start_workflow(
            WORKFLOW_NAME,
            batch_input(self.settings, batch_id, camera_id, site_id, [], webhook_url or row["webhook_url"],
                        row["frame_count"], row.get("model")),
            **start_options(batch_id, camera_id, site_id, self.settings.orchestration_task_queue),
            # Shown in the Temporal UI beside the history: the trace to open for the minutes outside it.
            memo={"trace_id": trace_id} if (trace_id := row.get("trace_id") or current_trace_id()) else None,
        )

    def _accepted(self, row: Row, created: bool, rerun: bool = False) -> BatchAccepted:
        return BatchAccepted(batch_id=row["batch_id"], workflow_id=row["batch_id"], status=row["status"],
                             frame_count=row["frame_count"], created=created, rerun=rerun,
                             temporal_ui_url=self.settings.workflow_ui_url(row["batch_id"]),
                             trace_id=row.get("trace_id"))

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
        return {**row, "model": row.get("model") or DEFAULT_MODEL,
                "duration_s": (done - row["created_at"]).total_seconds() if done else None,
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
