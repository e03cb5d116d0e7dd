"""Drift checks and reports as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from workflows.batch_types import NAME_PATTERN


class DriftCheckRequest(BaseModel):
    site_id: str = Field(pattern=NAME_PATTERN, description="the site whose recent frames to check")


class DriftCheckStarted(BaseModel):
    workflow_id: str = Field(description="the DriftCheckWorkflow id, also the id of the report it writes")
    report_url: str
    temporal_ui_url: str


class DriftColumn(BaseModel):
    column_name: str
    column_type: str = Field(description="numerical or categorical")
    stattest: str = Field(description="Evidently's test for the column")
    threshold: float | None = Field(None, description="p-value below which the column drifted")
    score: float | None = Field(None, description="the test's p-value")
    drifted: bool


class DriftDecision(BaseModel):
    decision: str = Field(description="retrain, wait_for_labels, cooldown or already_retraining")
    reason: str
    labels_available: int
    labels_required: int
    last_retraining_at: datetime | None = None
    cooldown_seconds: float
    snapshot_id: str | None = None
    retraining_workflow_id: str | None = None
    webhook_workflow_id: str | None = None
    decided_at: datetime


class DriftReportSummary(BaseModel):
    report_id: str
    site_id: str
    model_version: str | None = Field(None, description="the production version whose reference was used")
    status: str = Field(description="drift, no_drift or insufficient_data")
    drift_share: float | None = Field(None, description="share of the checked columns that drifted")
    drifted_columns: int
    total_columns: int
    reference_frames: int
    current_frames: int
    current_from: datetime | None = None
    current_until: datetime | None = None
    unfamiliar_rate_reference: float | None = None
    unfamiliar_rate_current: float | None = None
    requested_by: str
    decision: str | None = None
    decision_reason: str | None = None
    retraining_workflow_id: str | None = None
    checked_at: datetime
    url: str = Field(description="this report")
    html_url: str | None = Field(None, description="Evidently's HTML report (same API key)")


class DriftReport(DriftReportSummary):
    columns: list[DriftColumn]
    policy: DriftDecision | None = None
    temporal_ui_url: str


class DriftReportList(BaseModel):
    reports: list[DriftReportSummary]
    next_before: datetime | None = Field(None, description="pass as `before` for the next page")
