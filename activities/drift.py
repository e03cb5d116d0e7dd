"""Activities of DriftCheckWorkflow: its policy from settings, the sites to check, the Evidently check
itself (HTML to the object store, verdict and per-column results to Postgres), what a retraining
would use now, and the decision with its reason.

Every write is keyed by the report id (the workflow id), so a retried check rewrites the same rows.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from temporalio import activity

from activities import metrics
from infra.db import DbPool
from infra.log import get_logger
from infra.settings import Settings
from infra.store import ObjectStore
from infra.tables import drift_report_columns, drift_reports, predictions, retraining_decisions, retraining_runs
from infra.tables.reviewed_frame_labels import count_decided_since
from vision.artifacts import REFERENCE, IntegrityError, load_verified
from vision.datasets import plan_snapshot
from vision.drift import DEFAULT_P_VALUE, check_drift
from vision.registry import ModelNotFound, ModelRegistry, ModelVersion
from vision.training import PROFILES
from workflows.drift_types import (
    DriftPolicy,
    DriftPolicyInput,
    DriftReportSummary,
    DriftStatus,
    ListSitesInput,
    Readiness,
    ReadinessInput,
    RecordDecisionInput,
    RunDriftCheckInput,
)
from workflows.failures import DriftFailure
from workflows.retraining_types import SnapshotPlan, TrainingParams
from workflows.rollout_types import plan_from

log = get_logger(__name__)


def training_params(settings: Settings) -> TrainingParams:
    """The retraining defaults of settings (a trigger may override them)."""
    return TrainingParams(profile=settings.retraining_profile, epochs=settings.retraining_epochs,
                          reviewed_share=settings.retraining_reviewed_share,
                          reviewed_holdout_pct=settings.retraining_reviewed_holdout_pct)


def current_row(row: dict[str, Any]) -> dict[str, Any]:
    """A recorded prediction as a drift row: the columns of a version's reference rows."""
    return {**(row.get("quality") or {}), "label": row["label"], "confidence": row["confidence"],
            "novelty": row.get("novelty"), "unfamiliar": row.get("unfamiliar")}


def _iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class DriftActivities:
    def __init__(self, pool: DbPool, store: ObjectStore, settings: Settings, registry: ModelRegistry) -> None:
        self.pool = pool
        self.store = store
        self.settings = settings
        self.registry = registry
        self._references: dict[str, list[dict[str, Any]]] = {}  # a version's reference never changes

    @activity.defn
    async def drift_policy(self, input: DriftPolicyInput) -> DriftPolicy:
        s = self.settings
        return DriftPolicy(
            window_frames=s.drift_window_frames, min_frames=s.drift_min_frames, column_share=s.drift_column_share,
            p_value=DEFAULT_P_VALUE, active_site_hours=s.drift_active_site_hours,
            min_new_labels=s.retraining_min_new_labels, cooldown_s=s.retraining_cooldown_s,
            webhook_url=s.drift_webhook_url, min_improvement=s.retraining_min_improvement,
            training_task_queue=s.training_task_queue, heartbeat_timeout_s=s.training_heartbeat_timeout_s,
            training_timeout_s=s.training_timeout_s, params=training_params(s),
            rollout=plan_from("", s.rollout_defaults(), "drift policy") if s.retraining_auto_rollout else None,
            drift_task_queue=s.drift_task_queue,
        )

    @activity.defn
    async def list_drift_sites(self, input: ListSitesInput) -> list[str]:
        async with self.pool.connection() as conn:
            return await predictions.active_sites(conn, input.active_hours)

    def _reference(self, version: ModelVersion) -> list[dict[str, Any]]:
        cached = self._references.get(version.version)
        if cached is None:
            try:
                _, files = load_verified(self.store, version.manifest_key, version.manifest_sha256, (REFERENCE,))
            except IntegrityError as exc:
                raise DriftFailure.NO_REFERENCE.error(
                    f"production version {version.version} has no usable drift reference: {exc}") from None
            cached = self._references[version.version] = json.loads(files[REFERENCE])
        return cached

    @activity.defn
    async def run_drift_check(self, input: RunDriftCheckInput) -> DriftReportSummary:
        row: dict[str, Any] = {
            "report_id": input.report_id, "run_id": input.run_id, "site_id": input.site_id, "model_version": None,
            "status": DriftStatus.INSUFFICIENT_DATA, "drift_share": None, "drifted_columns": 0, "total_columns": 0,
            "reference_frames": 0, "current_frames": 0, "current_from": None, "current_until": None,
            "unfamiliar_rate_reference": None, "unfamiliar_rate_current": None, "html_key": None,
            "requested_by": input.requested_by, "checked_at": datetime.fromisoformat(input.checked_at),
        }
        try:
            production = await asyncio.to_thread(self.registry.resolve, "production")
        except ModelNotFound:
            production = None
        recent: list[dict[str, Any]] = []
        if production is not None:
            row["model_version"] = production.version
            async with self.pool.connection() as conn:
                recent = await predictions.recent_of_site(conn, input.site_id, production.version,
                                                          input.window_frames)
        row["current_frames"] = len(recent)
        if recent:
            row["current_from"], row["current_until"] = recent[-1]["arrived_at"], recent[0]["arrived_at"]
        columns: list[drift_report_columns.ColumnResult] = []
        drifted: list[str] = []
        if production is not None and len(recent) >= input.min_frames:
            reference = await asyncio.to_thread(self._reference, production)
            result = await asyncio.to_thread(
                check_drift, reference, [current_row(r) for r in recent], column_share=input.column_share,
                p_value=input.p_value, title=f"Drift check {input.report_id}: site {input.site_id}, "
                                             f"model {production.version}")
            html_key = f"drift-reports/{input.report_id}.html"
            await asyncio.to_thread(self.store.put, html_key, result.html, "text/html")
            columns = [drift_report_columns.ColumnResult(c.column, c.column_type, c.stattest, c.threshold, c.score,
                                                         c.drifted) for c in result.columns]
            drifted = [c.column for c in result.columns if c.drifted]
            row.update(status=DriftStatus.DRIFT if result.drifted else DriftStatus.NO_DRIFT,
                       drift_share=result.drift_share, drifted_columns=len(drifted), total_columns=len(columns),
                       reference_frames=result.reference_frames,
                       unfamiliar_rate_reference=result.unfamiliar_rate_reference,
                       unfamiliar_rate_current=result.unfamiliar_rate_current, html_key=html_key)
        async with self.pool.connection() as conn, conn.transaction():
            await drift_reports.upsert(conn, row)
            await drift_report_columns.replace(conn, input.report_id, columns)
        if columns:
            metrics.record_drift(input.site_id, row["model_version"], {c.column_name: c.score for c in columns},
                                 row["drift_share"])
        log.info("drift checked", report_id=input.report_id, site_id=input.site_id, status=row["status"],
                 drifted=drifted, frames=len(recent))
        return DriftReportSummary(input.report_id, input.site_id, row["status"], row["model_version"],
                                  row["drift_share"], drifted, len(recent), row["unfamiliar_rate_current"],
                                  row["html_key"])

    @activity.defn
    async def retraining_readiness(self, input: ReadinessInput) -> Readiness:
        try:
            production: ModelVersion | None = await asyncio.to_thread(self.registry.resolve, "production")
        except ModelNotFound:
            production = None
        base = PROFILES[input.params.profile].base_set()
        async with self.pool.connection() as conn:
            labels = await count_decided_since(conn, production.created_at if production else None)
            last = await retraining_runs.last_started_at(conn)
            request, key, _ = await plan_snapshot(conn, self.store, base, input.params.reviewed_holdout_pct,
                                                  datetime.fromisoformat(input.until))
        plan = SnapshotPlan(request.snapshot_id, key, input.until, len(request.reviewed))
        return Readiness(labels, production.version if production else None,
                         last.isoformat() if last else None, plan)

    @activity.defn
    async def record_drift_decision(self, input: RecordDecisionInput) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await retraining_decisions.upsert(conn, {
                "report_id": input.report_id, "site_id": input.site_id, "decision": input.decision,
                "reason": input.reason, "labels_available": input.labels_available,
                "labels_required": input.labels_required, "last_retraining_at": _iso(input.last_retraining_at),
                "cooldown_seconds": input.cooldown_s, "snapshot_id": input.snapshot_id,
                "retraining_workflow_id": input.retraining_workflow_id,
                "webhook_workflow_id": input.webhook_workflow_id, "decided_at": _iso(input.decided_at),
            })
            await drift_reports.set_decision(conn, input.report_id, input.decision, input.reason,
                                             input.retraining_workflow_id, input.webhook_workflow_id)
        log.info("drift decision", report_id=input.report_id, decision=input.decision, reason=input.reason)
