"""Dataclasses RetrainingWorkflow, its activities, the drift policy and the API exchange, and the pure
rule that decides whether a candidate beats production. Frames never travel here: a snapshot is named
by its id and its plan's object key, a candidate by the object keys of what training wrote."""

from dataclasses import dataclass, field
from enum import StrEnum

from workflows.rollout_types import RolloutInput

WORKFLOW_NAME = "RetrainingWorkflow"
PROGRESS_QUERY = "progress"
PROGRESS_SIGNAL = "training_progress"


def retraining_workflow_id(snapshot_id: str) -> str:
    """`retraining-<snapshot id>`: a second trigger for the same snapshot names the same run, and the
    start is refused (the id reuse policy allows a new run only after a failed or cancelled one)."""
    return f"retraining-{snapshot_id}"


class RetrainingPhase(StrEnum):
    STARTING = "starting"
    SNAPSHOT = "snapshot"
    TRAINING = "training"
    EVALUATING = "evaluating"
    REGISTERING = "registering"
    DONE = "done"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    CANDIDATE = "candidate"  # beat production by the margin: the `candidate` alias, handed to rollout
    REJECTED = "rejected"    # registered, with its card, but not handed on


@dataclass
class TrainingParams:
    """What an ML engineer may choose; defaults come from settings when the run is triggered."""

    profile: str = "standard"        # the base generated set and, without a parent, the input size
    epochs: int = 6
    learning_rate: float = 2e-3
    batch_size: int = 64
    reviewed_share: float = 0.5      # share of each batch drawn from reviewed frames
    reviewed_holdout_pct: int = 20   # share of reviewed frames held out for evaluation
    init_from_parent: bool = True    # fine-tune production's weights rather than start from scratch
    seed: int = 0
    novelty_percentile: float = 99.5


@dataclass
class SnapshotPlan:
    """A snapshot decided at trigger time: its id, and the object key of the plan (the base set spec and
    the reviewed frames with their labels) the snapshot activity builds it from."""

    snapshot_id: str
    plan_key: str
    labels_until: str  # ISO time: reviewed labels decided up to then
    reviewed_frames: int


@dataclass
class RetrainingTrigger:
    kind: str                       # drift, manual (the API), cli
    requested_by: str               # 'drift policy' or the key / user that asked
    drift_report_id: str | None = None
    note: str = ""


@dataclass
class RetrainingInput:
    plan: SnapshotPlan
    params: TrainingParams
    trigger: RetrainingTrigger
    min_improvement: float = 0.01
    training_task_queue: str = "training"
    heartbeat_timeout_s: float = 30.0
    training_timeout_s: float = 4 * 3600.0
    # Set (settings.retraining_auto_rollout): a candidate handed to rollout starts its ModelRolloutWorkflow
    # with this plan (its candidate_version filled in).
    rollout: RolloutInput | None = None


@dataclass
class StartRunInput:
    workflow_id: str
    snapshot_id: str
    trigger: RetrainingTrigger
    params: TrainingParams
    started_at: str  # workflow time


@dataclass
class RunStarted:
    production_version: str | None  # what the candidate is measured against, and its parent


@dataclass
class MaterializeSnapshotInput:
    plan: SnapshotPlan


@dataclass
class SnapshotSummary:
    snapshot_id: str
    manifest_key: str
    manifest_sha256: str
    counts: dict[str, dict[str, int]]


@dataclass
class TrainCandidateInput:
    run_id: str  # the workflow id: checkpoints live under it, so a retried attempt finds them
    snapshot: SnapshotSummary
    params: TrainingParams
    parent_version: str | None


@dataclass
class TrainingProgress:
    """What the training activity reports (heartbeats and, at each epoch, a signal to its workflow)."""

    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    resumed_from_epoch: int = 0
    checkpoint_key: str | None = None
    attempt: int = 1


@dataclass
class TrainedCandidate:
    """Where training left the candidate (object keys) and how the run went."""

    result_key: str  # weights, novelty statistics, reference and metrics, under one prefix
    epochs_run: int
    resumed_from_epoch: int
    final_loss: float
    metrics: dict[str, dict] = field(default_factory=dict)


@dataclass
class EvaluateInput:
    run_id: str
    snapshot: SnapshotSummary
    candidate: TrainedCandidate
    production_version: str | None


@dataclass
class Evaluation:
    """Accuracy of the candidate and of production on the same named sets: the snapshot's held-out
    generated frames (`holdout`) and its held-out reviewed frames (`reviewed_holdout`, the camera now)."""

    production_version: str | None
    candidate: dict[str, dict] = field(default_factory=dict)
    production: dict[str, dict] = field(default_factory=dict)


@dataclass
class RegisterCandidateInput:
    run_id: str
    snapshot: SnapshotSummary
    candidate: TrainedCandidate
    evaluation: Evaluation
    trigger: RetrainingTrigger
    params: TrainingParams
    parent_version: str | None


@dataclass
class RegisteredCandidate:
    version: str
    manifest_key: str


@dataclass
class HandOffInput:
    run_id: str
    version: str
    reason: str


@dataclass
class FinishRunInput:
    workflow_id: str
    status: str
    phase: str
    finished_at: str
    candidate_version: str | None = None
    outcome: str | None = None
    outcome_reason: str | None = None
    evaluation: Evaluation | None = None
    epochs_run: int | None = None
    resumed_from_epoch: int | None = None
    error: str | None = None


@dataclass
class RetrainingProgress:
    """The `progress` query: where the run is, and during training its epoch, loss and ETA."""

    phase: str
    snapshot_id: str
    training: TrainingProgress = field(default_factory=TrainingProgress)
    production_version: str | None = None
    candidate_version: str | None = None
    outcome: str | None = None
    outcome_reason: str | None = None
    rollout_workflow_id: str | None = None
    # The hand-off found another rollout holding the model line (one at a time): why none started.
    rollout_skipped: str | None = None


@dataclass
class RetrainingResult:
    snapshot_id: str
    candidate_version: str
    outcome: str
    reason: str
    evaluation: Evaluation
    epochs_run: int
    resumed_from_epoch: int


def primary_set(evaluation: Evaluation) -> str:
    """The set the decision is made on: the held-out reviewed frames when the snapshot has any (the
    conditions the camera sees now), else the held-out generated frames."""
    reviewed = evaluation.candidate.get("reviewed_holdout", {})
    return "reviewed_holdout" if reviewed.get("frames") else "holdout"


def compared_metric(evaluation: Evaluation) -> str:
    """What candidate and production are compared on: a detection version's sets carry mAP@0.5
    (vision.detection_metrics), a classifier's accuracy."""
    return "map_50" if any("map_50" in m for m in evaluation.candidate.values()) else "accuracy"


def beats_production(evaluation: Evaluation, min_improvement: float) -> tuple[bool, str]:
    """Whether the candidate goes on to rollout, and why: its accuracy (a detector's mAP@0.5) on the
    primary set must beat production's by `min_improvement`, and on every other set it must not be worse
    by more than that."""
    name = primary_set(evaluation)
    key = compared_metric(evaluation)
    mine = evaluation.candidate.get(name, {}).get(key)
    if mine is None:
        return False, f"the candidate has no {key} on {name}"
    if evaluation.production_version is None:
        return True, f"no production version to beat; {key} {mine:.4f} on {name}"
    theirs = evaluation.production.get(name, {}).get(key)
    if theirs is None:
        return True, f"production has no {key} on {name}; the candidate has {mine:.4f}"
    for other, metrics in evaluation.candidate.items():
        base = evaluation.production.get(other, {}).get(key)
        if other != name and base is not None and metrics.get(key, 0.0) < base - min_improvement:
            return False, (f"worse than {evaluation.production_version} on {other}: {metrics.get(key):.4f} "
                           f"vs {base:.4f}")
    if mine >= theirs + min_improvement:
        return True, (f"beats {evaluation.production_version} on {name}: {mine:.4f} vs {theirs:.4f} "
                      f"(margin {min_improvement})")
    return False, (f"does not beat {evaluation.production_version} by {min_improvement} on {name}: "
                   f"{mine:.4f} vs {theirs:.4f}")
