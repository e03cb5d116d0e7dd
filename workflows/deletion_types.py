"""Dataclasses of DeletionWorkflow and RetentionWorkflow and their activities (issue 24).

A deletion names frames by a scope (a camera, a site, a time range, a list of batches); its plan writes
the frames it names to a ledger in Postgres (`deletion_frames`), so no frame id travels in a payload and
a retried plan names the same frames. Chunks remove the ledger's frames in bounded steps.
"""


from dataclasses import dataclass, field

DELETION_WORKFLOW = "DeletionWorkflow"
RETENTION_WORKFLOW = "RetentionWorkflow"
RETENTION_SCHEDULE_ID = "retention"
PROGRESS_QUERY = "progress"
# Retention's kinds of record, in the order a run expires them: reviews before the frames they show.
RETENTION_KINDS = ("review_tasks", "predictions", "frames", "drift_reports")


def deletion_workflow_id(site_id: str | None, request_id: str) -> str:
    """`deletion:<site>:<request id>`; `all` when the request is not limited to one site."""
    return f"deletion:{site_id or 'all'}:{request_id}"


@dataclass
class DeletionScope:
    """What a request named; every field given narrows it (an empty scope is refused by the API)."""

    site_id: str | None = None
    camera_id: str | None = None
    created_from: str | None = None   # ISO 8601, inclusive
    created_until: str | None = None  # ISO 8601, exclusive
    batch_ids: list[str] = field(default_factory=list)


@dataclass
class DeletionInput:
    deletion_id: str
    scope: DeletionScope
    requested_by: str
    force: bool = False
    reason: str = ""
    chunk_size: int = 200
    chunks_per_run: int = 50
    # Carried over continue-as-new: the plan is made once.
    planned: bool = False
    chunks_done: int = 0


@dataclass
class DeletionCounts:
    """What was removed so far (cumulative, read from the request's row)."""

    frames: int = 0
    objects: int = 0
    predictions: int = 0
    shadow_predictions: int = 0
    review_tasks: int = 0
    review_workflows_ended: int = 0
    review_labels: int = 0
    batches: int = 0
    drift_reports_rebuilt: int = 0
    snapshots_marked: int = 0
    models_recorded: int = 0


@dataclass
class DeletionProgress:
    deletion_id: str
    status: str = "planning"  # planning, deleting, finishing, completed, failed
    frames_total: int = 0
    frames_deleted: int = 0
    counts: DeletionCounts = field(default_factory=DeletionCounts)
    aborted_rollouts: list[str] = field(default_factory=list)
    verified: bool | None = None


@dataclass
class PlanDeletionInput:
    deletion_id: str
    scope: DeletionScope


@dataclass
class DeletionPlan:
    frames_total: int
    rollouts: list[str] = field(default_factory=list)  # running rollouts of models trained on these frames


@dataclass
class AbortRolloutsInput:
    deletion_id: str
    rollouts: list[str]
    requested_by: str


@dataclass
class DeletionChunkInput:
    deletion_id: str
    limit: int


@dataclass
class DeletionChunkResult:
    purged: int               # frames this chunk removed (0: none left)
    remaining: int
    progress: DeletionProgress


@dataclass
class FinishDeletionInput:
    deletion_id: str
    requested_by: str


@dataclass
class RetentionInput:
    chunk_size: int = 500
    chunks_per_run: int = 50
    # Carried over continue-as-new.
    kind_index: int = 0
    chunks_done: int = 0
    removed: dict[str, int] = field(default_factory=dict)


@dataclass
class RetentionChunkInput:
    kind: str
    now: str  # ISO 8601 workflow time: what "expired" is measured against
    limit: int
    chunk: str  # names the chunk in the audit log: a retried activity writes one row


@dataclass
class RetentionChunkResult:
    kind: str
    removed: int
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class RetentionResult:
    removed: dict[str, int] = field(default_factory=dict)
