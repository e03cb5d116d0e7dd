"""RetrainingWorkflow's activities on the orchestration queue: the run's row in Postgres (started,
finished), the production version it is measured against, and the hand-off of a winning candidate to
rollout (the `candidate` alias, with its reason in the alias history)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime

from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.tables import retraining_runs
from vision.registry import ModelNotFound, ModelRegistry
from workflows.retraining_types import FinishRunInput, HandOffInput, RunStarted, StartRunInput

log = get_logger(__name__)


class RetrainingRecords:
    def __init__(self, pool: DbPool, registry: ModelRegistry) -> None:
        self.pool = pool
        self.registry = registry

    @activity.defn
    async def start_retraining_run(self, input: StartRunInput) -> RunStarted:
        try:
            production: str | None = (await asyncio.to_thread(self.registry.resolve, "production")).version
        except ModelNotFound:
            production = None
        t = input.trigger
        async with self.pool.connection() as conn:
            await retraining_runs.start(
                conn, workflow_id=input.workflow_id, snapshot_id=input.snapshot_id, trigger_kind=t.kind,
                drift_report_id=t.drift_report_id, requested_by=t.requested_by, note=t.note,
                parameters=asdict(input.params), production_version=production,
                started_at=datetime.fromisoformat(input.started_at))
        log.info("retraining started", workflow_id=input.workflow_id, snapshot_id=input.snapshot_id,
                 trigger=t.kind, production=production)
        return RunStarted(production)

    @activity.defn
    async def finish_retraining_run(self, input: FinishRunInput) -> None:
        async with self.pool.connection() as conn:
            await retraining_runs.finish(
                conn, input.workflow_id, status=input.status, phase=input.phase,
                finished_at=datetime.fromisoformat(input.finished_at), candidate_version=input.candidate_version,
                outcome=input.outcome, outcome_reason=input.outcome_reason,
                evaluation=asdict(input.evaluation) if input.evaluation else None, epochs_run=input.epochs_run,
                resumed_from_epoch=input.resumed_from_epoch, error=input.error)
        log.info("retraining finished", workflow_id=input.workflow_id, status=input.status, outcome=input.outcome)

    @activity.defn
    async def hand_to_rollout(self, input: HandOffInput) -> None:
        """The candidate alias names the version rollout takes next; the change and its reason are in
        the alias history. Setting it to the version it already names records nothing (a retry)."""
        await asyncio.to_thread(self.registry.set_alias, "candidate", input.version, f"retraining {input.run_id}",
                                input.reason)
        log.info("candidate handed to rollout", version=input.version, run_id=input.run_id)
