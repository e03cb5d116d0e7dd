"""Camera health, judged by the classification activity for every chunk it records (vision.camera_health
says how): in the transaction that records the chunk's predictions, so a chunk counts once and together
with its frames, and with a handful of statements whatever the chunk's size (Postgres aggregates the
features; nothing loops over frames here).

A change of what receivers were told (healthy -> degraded, degraded -> healthy) sends a signed
`camera.degraded` or `camera.recovered` webhook through the same delivery workflow as a batch's defect
alert: to the webhook the camera's batches name (registered for their site, so a site's receiver hears
only of its own cameras) and to the operator's `camera_health_webhook_url`. The deliveries are started
after the transaction commits, their ids derived from the recorded event, so a retried activity starts
the same ones again and Temporal's id reuse policy keeps them single. None of this starts a drift check
or a retraining, and drift checks do not read it: a degraded camera is maintenance, announced with its
own event to whoever maintains the camera, while a line whose world changed (the demo's dimmer line)
is still drift for the model's owners to decide on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from infra.db import DbConnection, Row
from infra.log import get_logger
from infra.settings import Settings
from infra.tables import camera_health as rows
from vision.camera_health import (
    METRICS,
    CameraState,
    ChunkStats,
    HealthPolicy,
    Judgement,
    Moments,
    bands,
    judge,
)
from workflows.alert_types import (
    WEBHOOK_DELIVERY_WORKFLOW,
    WebhookDeliveryInput,
    WebhookRetry,
    webhook_task_queue,
    webhook_workflow_id,
)

log = get_logger(__name__)


def policy_of(settings: Settings) -> HealthPolicy:
    return HealthPolicy(calibration_frames=settings.camera_health_calibration_frames,
                        tolerance=settings.camera_health_tolerance,
                        window_frames=settings.camera_health_window_frames,
                        frozen_frames=settings.camera_health_frozen_frames)


def camera_state(row: Row) -> CameraState:
    calibration = {metric: Moments.from_dict(m) for metric, m in (row["calibration"] or {}).items()}
    return CameraState(state=row["state"], reasons=list(row["reasons"]), announced=row["announced"],
                       calibration=calibration, calibrated=row["calibrated_at"] is not None,
                       recent={k: float(v) for k, v in (row["recent"] or {}).items()},
                       last_sha256=row["last_sha256"], repeated_frames=row["repeated_frames"])


def chunk_stats(sample: Row) -> ChunkStats:
    return ChunkStats(frames=sample["frames"],
                      metrics={metric: Moments.from_dict(sample["metrics"].get(metric)) for metric in METRICS},
                      leading_sha256=sample["leading_sha256"], leading_run=sample["leading_run"],
                      trailing_sha256=sample["trailing_sha256"], trailing_run=sample["trailing_run"],
                      single_run=sample["single_run"], longest_run=int(sample["longest_run"]))


def delivery_id(site_id: str, camera_id: str, seq: int) -> str:
    """What receivers dedupe by: the camera's event, the same on every retry."""
    return f"camera:{site_id}:{camera_id}:{seq}"


@dataclass(frozen=True)
class Announcement:
    """A webhook to start once the transaction that recorded its event committed."""

    event: str
    payload: dict
    targets: list[tuple[str, str]]  # (delivery id, URL)


def _payload(site_id: str, camera_id: str, row: Row, judgement_state: str, reasons: list[str], seq: int,
             previous: str, batch_id: str | None, policy: HealthPolicy) -> dict:
    calibrated = bands({metric: Moments.from_dict(m) for metric, m in (row["calibration"] or {}).items()},
                       policy.tolerance)
    since = row["since"]
    return {
        "site_id": site_id, "camera_id": camera_id, "state": judgement_state, "previous_state": previous,
        "reasons": reasons, "since": since.isoformat() if isinstance(since, datetime) else since,
        "batch_id": batch_id, "seq": seq, "repeated_frames": row["repeated_frames"],
        "recent": row["recent"],
        "calibrated_range": {m: {"low": round(b.low, 4), "high": round(b.high, 4)} for m, b in calibrated.items()},
        # What to do about it: clean or refocus the lens, check the lights, restart the camera; not retrain.
        "kind": "maintenance",
    }


class CameraHealthMonitor:
    def __init__(self, temporal: Client, settings: Settings) -> None:
        self.temporal = temporal
        self.settings = settings
        self.policy = policy_of(settings)

    def _targets(self, base: str, camera_url: str | None) -> list[tuple[str, str]]:
        targets = [(base, camera_url)] if camera_url else []
        ops = self.settings.camera_health_webhook_url
        if ops and ops != camera_url:
            targets.append((f"{base}.ops", ops))
        return targets

    async def evaluate(self, conn: DbConnection, *, batch_id: str, start: int, end: int, site_id: str,
                       camera_id: str, webhook_url: str | None) -> Announcement | None:
        """Judge positions [start, end) of a batch whose predictions this transaction recorded. A chunk
        judged before is not judged again: its event, if it had one, is announced again (idempotently)."""
        sample = await rows.claim_chunk(conn, batch_id=batch_id, start=start, end=end, site_id=site_id,
                                        camera_id=camera_id)
        if sample is None:
            return await self.recorded(conn, batch_id, start)
        camera = await rows.lock_camera(conn, site_id=site_id, camera_id=camera_id,
                                        calibration_target=self.policy.calibration_frames, batch_id=batch_id,
                                        webhook_url=webhook_url)
        before = camera_state(camera)
        # The target a recalibration set, not today's setting: a calibration finishes as it was begun.
        policy = HealthPolicy(camera["calibration_target"], self.policy.tolerance, self.policy.window_frames,
                              self.policy.frozen_frames)
        judged: Judgement = judge(before, chunk_stats(sample), policy)
        after = judged.camera
        seq = camera["transitions"] + (1 if judged.state_changed else 0)
        saved = await rows.save(conn, site_id=site_id, camera_id=camera_id, batch_id=batch_id, start=start,
                                update=rows.Update(
                                    after.state, after.reasons, after.announced,
                                    {m: v.to_dict() for m, v in after.calibration.items()}, after.calibrated,
                                    after.recent, after.last_sha256, after.repeated_frames, judged.state_changed,
                                    seq))
        if not judged.state_changed:
            if after.reasons != before.reasons:
                log.info("camera health reasons changed", site_id=site_id, camera_id=camera_id, reasons=after.reasons)
            return None
        announcement = None
        targets: list[tuple[str, str]] = []
        if judged.event:
            targets = self._targets(delivery_id(site_id, camera_id, seq), saved["webhook_url"])
            announcement = Announcement(judged.event, _payload(site_id, camera_id, saved, after.state, after.reasons,
                                                               seq, before.state, batch_id, policy), targets)
        await rows.record_event(conn, rows.NewEvent(
            site_id, camera_id, seq, before.state, after.state, after.reasons, judged.event,
            {"recent": after.recent, "repeated_frames": after.repeated_frames,
             "payload": announcement.payload if announcement else None,
             "targets": [{"delivery_id": d, "url": u} for d, u in targets]},
            batch_id, start, None, [webhook_workflow_id(d) for d, _ in targets]))
        log.info("camera health changed", site_id=site_id, camera_id=camera_id, state=after.state,
                 previous=before.state, reasons=after.reasons, webhook_event=judged.event)
        return announcement

    async def recorded(self, conn: DbConnection, batch_id: str, start: int) -> Announcement | None:
        """The announcement a chunk's recorded event makes (a retry after the transaction committed)."""
        event = await rows.event_of_chunk(conn, batch_id, start)
        if event is None or not event["event"]:
            return None
        details = event["details"] or {}
        return Announcement(event["event"], details.get("payload") or {},
                            [(t["delivery_id"], t["url"]) for t in details.get("targets") or []])

    async def announce(self, announcement: Announcement | None, orchestration_task_queue: str = "") -> None:
        """Start the announcement's deliveries (beside the batch's orchestration queue, as its alerts
        are); one started before (a retry) is left as it is."""
        if announcement is None:
            return
        orchestration_task_queue = orchestration_task_queue or self.settings.orchestration_task_queue
        for delivery, url in announcement.targets:
            try:
                await self.temporal.start_workflow(
                    WEBHOOK_DELIVERY_WORKFLOW,
                    WebhookDeliveryInput(delivery, url, announcement.event, announcement.payload, WebhookRetry()),
                    id=webhook_workflow_id(delivery), task_queue=webhook_task_queue(orchestration_task_queue),
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
            except WorkflowAlreadyStartedError:
                log.info("webhook delivery already started", delivery_id=delivery)
