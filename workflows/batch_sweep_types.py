"""Dataclasses of StaleBatchSweepWorkflow and its activity."""

from dataclasses import dataclass, field

WORKFLOW_NAME = "StaleBatchSweepWorkflow"
SCHEDULE_ID = "stale-batch-sweep"


@dataclass
class BatchSweepInput:
    older_than_s: float = 120.0  # 'received' this long: its request is over, one way or another
    limit: int = 500             # batches per sweep; the next sweep takes the rest


@dataclass
class BatchSweepResult:
    started: list[str] = field(default_factory=list)   # workflows started (or found running) for these
    released: list[str] = field(default_factory=list)  # failed with the reason: frames never stored
