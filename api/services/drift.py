"""Drift checks as the API offers them: start one for a site (a DriftCheckWorkflow, by name), and read
the reports (Postgres) and their Evidently HTML (the object store)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import Client

from api.audit import record_audit
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables import drift_report_columns, drift_reports, retraining_decisions
from infra.tables.api_keys import Principal
from workflows.drift_types import WORKFLOW_NAME, DriftCheckInput, drift_check_workflow_id


class ReportNotFound(LookupError):
    pass


@dataclass
class ReportDetail:
    report: Row
    columns: list[Row]
    decision: Row | None


class DriftService:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal
        self.settings = settings

    async def start_check(self, site_id: str, caller: Principal) -> str:
        """Start a check of the site now; its workflow id is the id of the report it writes."""
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        workflow_id = drift_check_workflow_id(site_id, stamp)
        await self.temporal.start_workflow(
            WORKFLOW_NAME, DriftCheckInput(site_id, requested_by=f"{caller.name} ({caller.key_id})"),
            id=workflow_id, task_queue=self.settings.orchestration_task_queue)
        async with self.pool.connection() as conn:
            await record_audit(conn, caller, "drift_check.start", f"drift-reports/{workflow_id}",
                               workflow_id=workflow_id, details={"site_id": site_id})
        return workflow_id

    async def listing(self, site_id: str | None, status: str | None, before: datetime | None, limit: int) -> list[Row]:
        async with self.pool.connection() as conn:
            return await drift_reports.listing(conn, site_id=site_id, status=status, before=before, limit=limit)

    async def detail(self, report_id: str) -> ReportDetail:
        async with self.pool.connection() as conn:
            report = await drift_reports.get(conn, report_id)
            if report is None:
                raise ReportNotFound(f"no drift report {report_id!r} (a check still running has none yet)")
            return ReportDetail(report, await drift_report_columns.of_report(conn, report_id),
                                await retraining_decisions.of_report(conn, report_id))

    async def html(self, report_id: str) -> bytes:
        detail = await self.detail(report_id)
        key = detail.report["html_key"]
        if not key:
            raise ReportNotFound(f"drift report {report_id!r} has no HTML report ({detail.report['status']})")
        try:
            return await asyncio.to_thread(self.store.get, key)
        except ObjectNotFoundError:
            raise ReportNotFound(f"the HTML of drift report {report_id!r} is gone from the store") from None
