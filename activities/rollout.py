"""ModelRolloutWorkflow's activities: the rollout's row, the live traffic split and the aliases in the
registry (each change in the registry's history and the audit log), and the figures a stage's gates are
judged on. Every one is idempotent: a retried or replayed call leaves the registry, the history and the
audit log as one call would."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Any

from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.tables import audit_log, rollouts
from vision.registry import ModelRegistry
from vision.traffic import TrafficSplit
from workflows.failures import RolloutRefusal
from workflows.rollout_types import (
    AliasMoveInput,
    ApplyStageInput,
    BeginRolloutInput,
    RecordRolloutInput,
    RolloutBegun,
    StageKind,
    StageMetrics,
    StageMetricsInput,
)

log = get_logger(__name__)


def _rate(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


class RolloutActivities:
    def __init__(self, pool: DbPool, registry: ModelRegistry) -> None:
        self.pool = pool
        self.registry = registry

    @activity.defn
    async def begin_rollout(self, input: BeginRolloutInput) -> RolloutBegun:
        """The production version the candidate replaces; refuses a candidate that is not registered or
        is production already. A retry after the split moved finds the same production version."""
        aliases = await asyncio.to_thread(self.registry.aliases)
        if await asyncio.to_thread(self.registry.get, input.candidate_version) is None:
            raise RolloutRefusal.UNKNOWN_VERSION.error(f"no model version {input.candidate_version!r}")
        production = aliases.get("production")
        if production is None:
            raise RolloutRefusal.INVALID.error("no production version to roll out against")
        if production == input.candidate_version:
            raise RolloutRefusal.SAME_AS_PRODUCTION.error(f"{production} is production already")
        log.info("rollout begun", rollout_id=input.rollout_id, candidate=input.candidate_version, production=production)
        return RolloutBegun(production)

    @activity.defn
    async def apply_stage(self, input: ApplyStageInput) -> None:
        """Make the stage's split live (serving re-reads it within seconds, loading the candidate before it
        sends it a frame), and point the `shadow` alias at the shadowing version."""
        c, p = input.candidate_version, input.production_version
        if input.kind == StageKind.SHADOW:
            split = TrafficSplit((), c, input.share, rollout_id=input.rollout_id)
        elif input.kind == StageKind.CANARY:
            split = TrafficSplit.canary(c, p, input.share, rollout_id=input.rollout_id)
        else:
            split = TrafficSplit(rollout_id=input.rollout_id)
        shadow = c if input.kind == StageKind.SHADOW else None
        await asyncio.to_thread(self.registry.set_alias, "shadow", shadow, input.changed_by, input.reason)
        await asyncio.to_thread(self.registry.set_traffic, split, input.changed_by, input.reason)
        async with self.pool.connection() as conn, conn.transaction():
            await audit_log.append_once(conn, action="rollout.traffic", resource=f"traffic:{input.reason}",
                                        workflow_id=input.rollout_id, key_name=input.changed_by, role=None,
                                        details=split.as_dict())
        log.info("rollout traffic", rollout_id=input.rollout_id, stage=input.reason, split=split.as_dict())

    @activity.defn
    async def stage_metrics(self, input: StageMetricsInput) -> StageMetrics:
        async with self.pool.connection() as conn:
            f = await rollouts.stage_figures(conn, candidate=input.candidate_version,
                                             production=input.production_version,
                                             shadow=input.kind == StageKind.SHADOW,
                                             since=datetime.fromisoformat(input.since),
                                             low_confidence=input.low_confidence)
        frames, errors = int(f["frames"]), int(f["errors"])
        return StageMetrics(
            frames=frames, errors=errors, error_rate=round(errors / (frames + errors), 4) if frames + errors else 0.0,
            p95_infer_ms=_rate(f["p95_infer_ms"]), compared=int(f.get("compared") or 0),
            agreement=_rate(f.get("agreement")), unfamiliar_rate=_rate(f["unfamiliar_rate"]),
            production_unfamiliar_rate=_rate(f["production_unfamiliar_rate"]),
            low_confidence_rate=_rate(f["low_confidence_rate"]),
            production_low_confidence_rate=_rate(f["production_low_confidence_rate"]),
            labelled=int(f["labelled"]), correction_rate=_rate(f["correction_rate"]),
            production_correction_rate=_rate(f["production_correction_rate"]))

    @activity.defn
    async def record_rollout(self, input: RecordRolloutInput) -> None:
        s = input.state
        async with self.pool.connection() as conn:
            await rollouts.upsert(
                conn, rollout_id=s.rollout_id, candidate_version=s.candidate_version,
                previous_version=s.previous_version, status=s.status, stage=s.stage,
                split={"weights": s.split, "shadow_share": s.shadow_share},
                gates=[asdict(g) for g in s.gates], reason=s.reason, requested_by=s.requested_by,
                started_at=datetime.fromisoformat(s.started_at),
                finished_at=datetime.fromisoformat(s.finished_at) if s.finished_at else None)

    async def _move(self, input: AliasMoveInput, action: str, production: str) -> None:
        """Production to `production`, the split and the shadow cleared, the candidate alias released:
        each change in the registry's history (a repeated change records nothing) and once in the audit log."""
        by = input.changed_by
        previous = await asyncio.to_thread(self.registry.set_alias, "production", production, by, input.reason)
        await asyncio.to_thread(self.registry.set_traffic, TrafficSplit(rollout_id=input.rollout_id), by,
                                input.reason)
        await asyncio.to_thread(self.registry.set_alias, "shadow", None, by, input.reason)
        if (await asyncio.to_thread(self.registry.aliases)).get("candidate") == input.candidate_version:
            await asyncio.to_thread(self.registry.set_alias, "candidate", None, by, input.reason)
        async with self.pool.connection() as conn, conn.transaction():
            await audit_log.append_once(conn, action=action, resource=f"model_alias:production:{production}",
                                        workflow_id=input.rollout_id, key_name=by, role=input.role or None,
                                        details={"from": previous, "to": production, "reason": input.reason,
                                                 "candidate": input.candidate_version})
        log.info(action, rollout_id=input.rollout_id, production=production, reason=input.reason)

    @activity.defn
    async def promote(self, input: AliasMoveInput) -> None:
        await self._move(input, "rollout.promote", input.candidate_version)

    @activity.defn
    async def roll_back(self, input: AliasMoveInput) -> None:
        await self._move(input, "rollout.rollback", input.previous_version)
