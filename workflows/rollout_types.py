"""Dataclasses ModelRolloutWorkflow, its activities and the API exchange, and the pure rule that judges a
stage's gates. Frames never travel here: a stage is judged from figures an activity computes from the
recorded predictions."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

WORKFLOW_NAME = "ModelRolloutWorkflow"
STATE_QUERY = "state"
ROLLED_BACK_EVENT = "rollout.rolled_back"

# Who may act on a rollout (api.auth roles; admin may do anything): ML engineers everything; ops may stop
# one, not advance it. The workflow's update validators and the API's route guards (api.callers) both
# read these.
ROLLOUT_DRIVERS = ("ml-engineer",)
ROLLOUT_STOPPERS = ("ml-engineer", "ops")
ADMIN_ROLE = "admin"


def rollout_workflow_id(candidate_version: str) -> str:
    """`rollout-<candidate>`: a second start for the same candidate while one runs is refused."""
    return f"rollout-{candidate_version}"


def line_held(rollout_id: str, candidate_version: str) -> str:
    """Why a rollout cannot start or go on: another one holds the model line (one at a time)."""
    return (f"a rollout is running on the model line: {rollout_id} (candidate {candidate_version});"
            " one rollout at a time: wait for it to finish, or abort it")


class StageKind(StrEnum):
    SHADOW = "shadow"  # the candidate also classifies a share of frames; its answers are never acted on
    CANARY = "canary"  # the candidate answers a share of live traffic


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    FAILED = "failed"
    SKIPPED = "skipped"  # another rollout held the model line: this one changed nothing


FINISHED = (RolloutStatus.PROMOTED, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED, RolloutStatus.FAILED,
            RolloutStatus.SKIPPED)


@dataclass
class Stage:
    kind: str            # StageKind
    share: float         # of live frames: shadowed (shadow) or answered by the candidate (canary)
    min_frames: int      # the candidate's frames in the stage before its gates are judged
    min_duration_s: float

    @property
    def name(self) -> str:
        return f"{self.kind} {round(self.share * 100, 1):g}%"


@dataclass
class GateThresholds:
    max_error_rate: float = 0.02
    max_p95_infer_ms: float = 2000.0
    min_agreement: float = 0.5                  # with production on the same frames (shadow stages)
    max_unfamiliar_increase: float = 0.10       # candidate's rate minus production's, same window
    max_low_confidence_increase: float = 0.15
    max_correction_increase: float = 0.10       # reviewers' corrections, where labels exist
    min_labels: int = 10                        # fewer labelled frames: the correction gate is not judged
    low_confidence: float = 0.80                # below this confidence a prediction is low-confidence


@dataclass
class RolloutInput:
    candidate_version: str
    stages: list[Stage]
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    require_approval: bool = False
    requested_by: str = ""
    reason: str = ""
    webhook_url: str = ""                # where rollout.rolled_back goes; empty: recorded, not sent
    poll_interval_s: float = 15.0        # how often a stage's figures are read


def plan_from(candidate_version: str, defaults: dict[str, Any], requested_by: str = "", reason: str = "",
              **overrides: Any) -> RolloutInput:
    """A rollout's input from settings' defaults (infra.settings.Settings.rollout_defaults) and a
    request's overrides (any of the same keys; None keeps the default; thresholds merge by name)."""
    v = {**defaults, **{k: o for k, o in overrides.items() if o is not None}}
    # A request's thresholds change the settings' ones named, and keep the rest.
    v["thresholds"] = {**defaults.get("thresholds", {}), **(overrides.get("thresholds") or {})}
    stages = ([Stage(StageKind.SHADOW, float(v["shadow_share"]), int(v["min_frames"]), float(v["min_duration_s"]))]
              if float(v["shadow_share"]) > 0 else [])
    stages += [Stage(StageKind.CANARY, float(share), int(v["min_frames"]), float(v["min_duration_s"]))
               for share in v["canary_steps"]]
    known = set(GateThresholds.__dataclass_fields__)
    unknown = set(v["thresholds"]) - known
    if unknown:
        raise ValueError(f"unknown gate thresholds: {', '.join(sorted(unknown))}")
    return RolloutInput(candidate_version, stages, GateThresholds(**v["thresholds"]), bool(v["require_approval"]),
                        requested_by, reason, str(v["webhook_url"]), float(v["poll_interval_s"]))


@dataclass
class RolloutAction:
    """An update's argument: who asks, with which role, and why."""

    by: str
    role: str = ""
    reason: str = ""


@dataclass
class StageMetrics:
    frames: int = 0                      # the candidate's predictions in the stage (shadow: its shadow answers)
    errors: int = 0                      # frames it failed to classify
    error_rate: float = 0.0
    p95_infer_ms: float | None = None
    compared: int = 0                    # shadow: frames production also classified
    agreement: float | None = None
    unfamiliar_rate: float | None = None
    production_unfamiliar_rate: float | None = None
    low_confidence_rate: float | None = None
    production_low_confidence_rate: float | None = None
    labelled: int = 0                    # the candidate's frames a reviewer labelled
    correction_rate: float | None = None
    production_correction_rate: float | None = None


@dataclass
class GateCheck:
    name: str
    value: float | None
    limit: float
    passed: bool


@dataclass
class GateResult:
    stage: str
    passed: bool
    checks: list[GateCheck]
    metrics: StageMetrics
    judged_at: str

    @property
    def failures(self) -> str:
        return "; ".join(f"{c.name} {c.value:.4g} past {c.limit:.4g}" for c in self.checks
                         if not c.passed and c.value is not None)


def reviewers_side_with_candidate(m: StageMetrics, t: GateThresholds) -> bool:
    """Whether enough of the candidate's frames were labelled and reviewers corrected it less often than
    production over the same stage."""
    return (m.labelled >= t.min_labels and m.correction_rate is not None
            and m.production_correction_rate is not None and m.correction_rate < m.production_correction_rate)


def judge(stage: Stage, m: StageMetrics, t: GateThresholds, judged_at: str,
          reviews_overrule_agreement: bool = True) -> GateResult:
    """A stage's gates from its figures: each check passes, or the stage fails and the rollout rolls back.

    Disagreeing with production fails the shadow stage unless the reviewers side with the candidate: a
    model retrained after drift disagrees with the drifted production by design, and the labels say which
    of the two is right. (`reviews_overrule_agreement` False: the rule of rollouts begun before it.)"""
    checks = [GateCheck("error_rate", m.error_rate, t.max_error_rate, m.error_rate <= t.max_error_rate)]
    if m.p95_infer_ms is not None:
        checks.append(GateCheck("p95_infer_ms", m.p95_infer_ms, t.max_p95_infer_ms,
                                m.p95_infer_ms <= t.max_p95_infer_ms))
    if stage.kind == StageKind.SHADOW and m.agreement is not None:
        overruled = reviews_overrule_agreement and reviewers_side_with_candidate(m, t)
        checks.append(GateCheck("agreement", m.agreement, t.min_agreement,
                                m.agreement >= t.min_agreement or overruled))
    for name, mine, theirs, margin in (
            ("unfamiliar_rate", m.unfamiliar_rate, m.production_unfamiliar_rate, t.max_unfamiliar_increase),
            ("low_confidence_rate", m.low_confidence_rate, m.production_low_confidence_rate,
             t.max_low_confidence_increase),
            ("correction_rate", m.correction_rate if m.labelled >= t.min_labels else None,
             m.production_correction_rate, t.max_correction_increase)):
        if mine is not None:
            limit = (theirs or 0.0) + margin
            checks.append(GateCheck(name, mine, limit, mine <= limit))
    return GateResult(stage.name, all(c.passed for c in checks), checks, m, judged_at)


@dataclass
class RolloutState:
    """The `state` query and every update's answer: where the rollout is, the split, the gates so far."""

    rollout_id: str
    candidate_version: str
    status: str = RolloutStatus.RUNNING
    stage: str = "starting"
    stage_index: int = -1
    stages: list[str] = field(default_factory=list)
    previous_version: str | None = None
    split: dict[str, float] = field(default_factory=dict)  # version -> share of live traffic
    shadow_share: float = 0.0
    paused: bool = False
    require_approval: bool = False
    approved_by: str | None = None
    current: StageMetrics | None = None
    gates: list[GateResult] = field(default_factory=list)
    reason: str | None = None
    requested_by: str = ""
    started_at: str = ""
    finished_at: str | None = None


@dataclass
class BeginRolloutInput:
    rollout_id: str
    candidate_version: str
    requested_by: str
    reason: str
    started_at: str


@dataclass
class RolloutBegun:
    production_version: str  # what the candidate replaces; rollback returns the alias here
    # The registry's model line revision read at the start: the rollout's first move is applied only if
    # the line is still there. None from a run begun before revisions: its first move applies as it is.
    revision: int | None = None
    held_by: str | None = None            # another rollout holds the model line: this one ends skipped
    held_by_candidate: str | None = None


@dataclass
class ApplyStageInput:
    """Make the split a stage wants live (kind None: everything back to production, no shadow)."""

    rollout_id: str
    candidate_version: str
    production_version: str
    kind: str | None
    share: float
    changed_by: str
    reason: str
    revision: int | None = None  # the line's revision after the rollout's last move (None: unconditional)


@dataclass
class StageMetricsInput:
    candidate_version: str
    production_version: str
    kind: str
    since: str  # the stage's start (workflow time)
    low_confidence: float


@dataclass
class RecordRolloutInput:
    state: RolloutState


@dataclass
class AliasMoveInput:
    """Promote (the production alias to the candidate) or roll back (to the previous version)."""

    rollout_id: str
    candidate_version: str
    previous_version: str
    changed_by: str
    role: str
    reason: str
    revision: int | None = None  # the line's revision after the rollout's last move (None: unconditional)


@dataclass
class LineMoved:
    """What one of the rollout's moves did to the model line (apply_stage, promote, roll_back)."""

    revision: int | None = None    # the line's revision after it: the rollout's next move names it
    conflict: str | None = None    # refused, nothing applied: the line moved outside the rollout (what, by whom)
    production: str | None = None  # the production version after the move
    left: str | None = None        # a rollback that left production as someone else set it since: who, what


@dataclass
class LineCheckInput:
    """Before a retraining hands its candidate to a rollout: is the model line held by another?"""

    rollout_id: str
    candidate_version: str
    requested_by: str
    reason: str
    started_at: str


@dataclass
class LineCheck:
    held_by: str | None = None  # the rollout holding the line; set: the hand-off was recorded as skipped
    reason: str | None = None
