"""Dataclasses DriftCheckWorkflow, its activities and the API exchange, and the drift policy: on
drift, retrain when enough new reviewed labels exist and the last retraining is older than a cooldown;
otherwise notify (`drift.detected`) and wait for labels."""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from workflows.retraining_types import SnapshotPlan, TrainingParams
from workflows.rollout_types import RolloutInput

WORKFLOW_NAME = "DriftCheckWorkflow"
# The Temporal Schedule that starts a sweep of every active site (workers.loop.ensure_drift_schedule).
SCHEDULE_ID = "drift-checks"
DRIFT_EVENT = "drift.detected"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def drift_check_workflow_id(site_id: str, stamp: str) -> str:
    """`drift-<site>-<stamp>`: also the id of the report it writes."""
    return f"drift-{_SAFE.sub('.', site_id) or 'site'}-{stamp}"


class DriftStatus(StrEnum):
    DRIFT = "drift"
    NO_DRIFT = "no_drift"
    INSUFFICIENT_DATA = "insufficient_data"


class DriftDecision(StrEnum):
    RETRAIN = "retrain"
    WAIT_FOR_LABELS = "wait_for_labels"
    COOLDOWN = "cooldown"
    ALREADY_RETRAINING = "already_retraining"  # a run for the same snapshot exists already


@dataclass
class DriftCheckInput:
    site_id: str = ""  # empty: every site with recent frames (what the schedule starts), one child each
    requested_by: str = "schedule"


@dataclass
class DriftPolicyInput:
    site_id: str


@dataclass
class DriftPolicy:
    """The settings a check runs under, read once when it starts (and kept in its history)."""

    window_frames: int
    min_frames: int
    column_share: float
    p_value: float
    active_site_hours: float
    min_new_labels: int
    cooldown_s: float
    webhook_url: str
    min_improvement: float
    training_task_queue: str
    heartbeat_timeout_s: float
    training_timeout_s: float
    params: TrainingParams = field(default_factory=TrainingParams)
    rollout: RolloutInput | None = None  # settings.retraining_auto_rollout: the retraining run's rollout plan
    drift_task_queue: str = ""  # where the Evidently check runs; empty (checks begun before): the workflow's own


@dataclass
class ListSitesInput:
    active_hours: float


@dataclass
class RunDriftCheckInput:
    report_id: str
    run_id: str
    site_id: str
    window_frames: int
    min_frames: int
    column_share: float
    p_value: float
    requested_by: str
    checked_at: str  # workflow time


@dataclass
class DriftReportSummary:
    report_id: str
    site_id: str
    status: str
    model_version: str | None
    drift_share: float | None
    drifted_columns: list[str]
    current_frames: int
    unfamiliar_rate_current: float | None = None
    html_key: str | None = None


@dataclass
class ReadinessInput:
    site_id: str
    params: TrainingParams
    until: str  # workflow time: labels decided up to now go into the snapshot


@dataclass
class Readiness:
    """What the policy weighs: labels reviewed since production was trained, when the last retraining
    started, and the snapshot a retraining would use now."""

    labels_available: int
    production_version: str | None
    last_retraining_at: str | None  # workflow time the last run started
    plan: SnapshotPlan | None


@dataclass
class RecordDecisionInput:
    report_id: str
    site_id: str
    decision: str
    reason: str
    labels_available: int
    labels_required: int
    last_retraining_at: str | None
    cooldown_s: float
    decided_at: str
    snapshot_id: str | None = None
    retraining_workflow_id: str | None = None
    webhook_workflow_id: str | None = None


@dataclass
class DriftCheckResult:
    site_id: str
    report_id: str | None = None
    status: str | None = None
    decision: str | None = None
    reason: str | None = None
    retraining_workflow_id: str | None = None
    webhook_workflow_id: str | None = None
    sites: list["DriftCheckResult"] = field(default_factory=list)  # a sweep: one per site checked


def decide(labels_available: int, min_new_labels: int, last_retraining_at: datetime | None, now: datetime,
           cooldown_s: float) -> tuple[DriftDecision, str]:
    """The drift policy, pure: retrain when at least `min_new_labels` reviewed labels arrived since
    production was trained and the last retraining started at least `cooldown_s` ago."""
    if labels_available < min_new_labels:
        return DriftDecision.WAIT_FOR_LABELS, (f"{labels_available} reviewed labels since production was trained; "
                                               f"retraining needs {min_new_labels}")
    if last_retraining_at is not None:
        since = now - last_retraining_at
        if since < timedelta(seconds=cooldown_s):
            return DriftDecision.COOLDOWN, (f"the last retraining started {since.total_seconds():.0f}s ago, "
                                            f"within the {cooldown_s:.0f}s cooldown")
    return DriftDecision.RETRAIN, (f"{labels_available} reviewed labels since production was trained "
                                   f"(at least {min_new_labels}) and no retraining within {cooldown_s:.0f}s")
