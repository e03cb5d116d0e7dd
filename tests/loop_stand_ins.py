"""Workflows and activities that stand in for the loop's real ones in the drift-policy and hand-off
tests, kept out of the test modules so Temporal's sandbox imports only this small file when it loads them."""

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
from workflows.retraining_types import (
    WORKFLOW_NAME,
    EvaluateInput,
    Evaluation,
    FinishRunInput,
    HandOffInput,
    MaterializeSnapshotInput,
    RegisterCandidateInput,
    RegisteredCandidate,
    RetrainingInput,
    RunStarted,
    SnapshotPlan,
    SnapshotSummary,
    StartRunInput,
    TrainCandidateInput,
    TrainedCandidate,
    TrainingParams,
)
from workflows.rollout_types import WORKFLOW_NAME as ROLLOUT_WORKFLOW
from workflows.rollout_types import LineCheck, LineCheckInput, RolloutInput


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


@workflow.defn(name=ROLLOUT_WORKFLOW)
class WaitingRolloutWorkflow:
    """Registered under ModelRolloutWorkflow's name: a rollout that waits until it is cancelled, so a
    test can see it run after the retraining that started it has finished."""

    @workflow.run
    async def run(self, input: RolloutInput) -> str:
        await workflow.wait_condition(lambda: False)
        return input.candidate_version


class ScriptedRetraining:
    """RetrainingWorkflow's activities, scripted: a candidate `version` whose accuracy on the reviewed
    frames is `candidate_accuracy` against production's 0.5; what reaches the records is kept."""

    def __init__(self, version: str, candidate_accuracy: float) -> None:
        self.version = version
        self.candidate_accuracy = candidate_accuracy
        self.handed_off: list[HandOffInput] = []
        self.finished: list[FinishRunInput] = []

    def activities(self) -> list:
        @activity.defn(name="start_retraining_run")
        async def start_retraining_run(input: StartRunInput) -> RunStarted:
            return RunStarted("v1")

        @activity.defn(name="materialize_snapshot")
        async def materialize_snapshot(input: MaterializeSnapshotInput) -> SnapshotSummary:
            return SnapshotSummary(input.plan.snapshot_id, "datasets/x/manifest.json", "0" * 64, {})

        @activity.defn(name="train_candidate")
        async def train_candidate(input: TrainCandidateInput) -> TrainedCandidate:
            return TrainedCandidate(f"training/{input.run_id}/result", 2, 0, 0.1)

        @activity.defn(name="evaluate_candidate")
        async def evaluate_candidate(input: EvaluateInput) -> Evaluation:
            return Evaluation("v1", {"reviewed_holdout": {"accuracy": self.candidate_accuracy, "frames": 40}},
                              {"reviewed_holdout": {"accuracy": 0.5, "frames": 40}})

        @activity.defn(name="register_candidate")
        async def register_candidate(input: RegisterCandidateInput) -> RegisteredCandidate:
            return RegisteredCandidate(self.version, f"models/{self.version}/manifest.json")

        @activity.defn(name="hand_to_rollout")
        async def hand_to_rollout(input: HandOffInput) -> None:
            self.handed_off.append(input)

        @activity.defn(name="finish_retraining_run")
        async def finish_retraining_run(input: FinishRunInput) -> None:
            self.finished.append(input)

        @activity.defn(name="skip_rollout_if_line_busy")
        async def skip_rollout_if_line_busy(input: LineCheckInput) -> LineCheck:
            return LineCheck()  # no other rollout holds the model line

        return [start_retraining_run, materialize_snapshot, train_candidate, evaluate_candidate, register_candidate,
                hand_to_rollout, finish_retraining_run, skip_rollout_if_line_busy]
