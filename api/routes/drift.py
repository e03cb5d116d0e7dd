"""Drift checks and their reports, for ML engineers and ops. Starting a check is audited; a key scoped to
sites checks and reads only those sites' reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from api.auth import require_scope
from api.callers import DriftChecker
from api.deps import DriftServiceDep, SettingsDep
from api.schemas.drift import DriftCheckRequest, DriftCheckStarted, DriftReport, DriftReportList, DriftReportSummary
from api.services.drift import ReportNotFound
from infra.db import Row
from infra.settings import Settings

router = APIRouter(tags=["drift"])

# Evidently's report runs its own scripts: in a sandbox (an opaque origin) they reach neither the API's
# cookies nor its other pages.
_HTML_HEADERS = {"Content-Security-Policy": "sandbox allow-scripts", "X-Content-Type-Options": "nosniff",
                 "Cache-Control": "private, max-age=300"}


def _summary(row: Row) -> dict[str, Any]:
    report_id = row["report_id"]
    return {**row, "url": f"/v1/drift-reports/{report_id}",
            "html_url": f"/v1/drift-reports/{report_id}/html" if row["html_key"] else None}


def _report(row: Row, columns: list[Row], decision: Row | None, settings: Settings) -> DriftReport:
    return DriftReport.model_validate({**_summary(row), "columns": columns, "policy": decision,
                                       "temporal_ui_url": settings.workflow_ui_url(row["report_id"])})


@router.post("/v1/drift-checks", status_code=status.HTTP_202_ACCEPTED, response_model=DriftCheckStarted,
             summary="Check a site's recent frames for drift now (a DriftCheckWorkflow)")
async def start_drift_check(body: DriftCheckRequest, caller: DriftChecker, drift: DriftServiceDep,
                            settings: SettingsDep) -> DriftCheckStarted:
    require_scope(caller, body.site_id)
    workflow_id = await drift.start_check(body.site_id, caller)
    return DriftCheckStarted(workflow_id=workflow_id, report_url=f"/v1/drift-reports/{workflow_id}",
                             temporal_ui_url=settings.workflow_ui_url(workflow_id))


@router.get("/v1/drift-reports", response_model=DriftReportList, summary="Drift reports, newest first")
async def list_drift_reports(
    caller: DriftChecker, drift: DriftServiceDep, site_id: str | None = None,
    status: Annotated[str | None, Query(pattern="^(drift|no_drift|insufficient_data)$")] = None,
    before: datetime | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DriftReportList:
    if caller.scoped:  # a scoped key lists one of its sites at a time
        require_scope(caller, site_id)
    rows = await drift.listing(site_id, status, before, limit)
    return DriftReportList(reports=[DriftReportSummary.model_validate(_summary(r)) for r in rows],
                           next_before=rows[-1]["checked_at"] if len(rows) == limit else None)


@router.get("/v1/drift-reports/{report_id}", response_model=DriftReport,
            responses={404: {"description": "no such report (yet)"}})
async def get_drift_report(report_id: str, caller: DriftChecker, drift: DriftServiceDep,
                           settings: SettingsDep) -> DriftReport:
    try:
        detail = await drift.detail(report_id)
    except ReportNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    require_scope(caller, detail.report["site_id"])
    return _report(detail.report, detail.columns, detail.decision, settings)


@router.get("/v1/drift-reports/{report_id}/html", response_class=Response,
            responses={200: {"content": {"text/html": {}}}, 404: {"description": "no such report or no HTML"}},
            summary="Evidently's HTML report")
async def get_drift_report_html(report_id: str, caller: DriftChecker, drift: DriftServiceDep,
                                request: Request) -> Response:
    try:
        require_scope(caller, (await drift.detail(report_id)).report["site_id"])
        html = await drift.html(report_id)
    except ReportNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(html, media_type="text/html", headers=_HTML_HEADERS)
