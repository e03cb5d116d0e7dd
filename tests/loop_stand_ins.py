"""Workflows and activities that stand in for the loop's real ones in the drift-policy tests, kept out of
the test modules so Temporal's sandbox imports only this small file when it loads them."""

from __future__ import annotations

from datetime import datetime

from temporalio import activity, workflow

from workflows.drift_types import (
    DriftPolicy,
    DriftPolicyInput,
    DriftReportSummary,
    DriftStatus,
    Readiness,
    ReadinessInput,
    RecordDecisionInput,
    RunDriftCheckInput,
)
from workflows.retraining_types import WORKFLOW_NAME, RetrainingInput, SnapshotPlan, TrainingParams


@workflow.defn(name=WORKFLOW_NAME)
class InstantRetrainingWorkflow:
    """Registered under RetrainingWorkflow's name: a retraining that finishes at once."""

    @workflow.run
    async def run(self, input: RetrainingInput) -> str:
        return input.plan.snapshot_id


class ScriptedDriftPolicy:
    """The drift workflow's activities, scripted: every check finds drift, `labels` reviewed labels are
    available, and the last retraining is the last decision to retrain (in workflow time)."""

    def __init__(self, labels: int, min_new_labels: int, cooldown_s: float) -> None:
        self.labels = labels
        self.min_new_labels = min_new_labels
        self.cooldown_s = cooldown_s
        self.decisions: list[RecordDecisionInput] = []

    def activities(self) -> list:
        @activity.defn(name="drift_policy")
        async def drift_policy(input: DriftPolicyInput) -> DriftPolicy:
            return DriftPolicy(300, 100, 0.3, 0.01, 24.0, self.min_new_labels, self.cooldown_s, "", 0.01,
                               "training", 30.0, 3600.0, TrainingParams(profile="micro"))

        @activity.defn(name="run_drift_check")
        async def run_drift_check(input: RunDriftCheckInput) -> DriftReportSummary:
            return DriftReportSummary(input.report_id, input.site_id, DriftStatus.DRIFT, "v1", 0.8, ["brightness"],
                                      300)

        @activity.defn(name="retraining_readiness")
        async def retraining_readiness(input: ReadinessInput) -> Readiness:
            retrained = [d.decided_at for d in self.decisions if d.decision == "retrain"]
            # Every check sees new labels: a new snapshot each time.
            plan = SnapshotPlan(f"snap-{len(self.decisions):04d}", "datasets/x/plan.json", input.until, self.labels)
            return Readiness(self.labels, "v1", max(retrained) if retrained else None, plan)

        @activity.defn(name="record_drift_decision")
        async def record_drift_decision(input: RecordDecisionInput) -> None:
            self.decisions.append(input)

        return [drift_policy, run_drift_check, retraining_readiness, record_drift_decision]

    def decided_at(self, i: int) -> datetime:
        return datetime.fromisoformat(self.decisions[i].decided_at)
