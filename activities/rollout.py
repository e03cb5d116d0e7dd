"""ModelRolloutWorkflow's activities: the rollout's row and its hold on the model line (one rollout at a
time), the live traffic split and the aliases in the registry (each change in the registry's history
and the audit log), and the figures a stage's gates are judged on. Every one is idempotent: a retried
or replayed call leaves the registry, the history and the audit log as one call would.

Every move of the split and the aliases is one registry transaction on the line's revision the rollout
read last (begin, or its own move before): a promotion or a split someone else made meanwhile is never
overwritten. Each move is named after its activity (workflow run and activity id), so a retry after it
committed finds it applied instead of failing the compare-and-set on the revision it moved itself."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.tables import audit_log, rollouts
from vision.boxes import agree, boxes_from
from vision.registry import LineMove, ModelRegistry, MoveResult, RevisionConflict
from vision.traffic import TrafficSplit
from workflows.failures import RolloutRefusal
from workflows.rollout_types import (
    FINISHED,
    AliasMoveInput,
    ApplyStageInput,
    BeginRolloutInput,
    LineCheck,
    LineCheckInput,
    LineMoved,
    RecordRolloutInput,
    RolloutBegun,
    RolloutStatus,
    StageKind,
    StageMetrics,
    StageMetricsInput,
    line_held,
)

log = get_logger(__name__)


def _rate(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def _run_id() -> str:
    return activity.info().workflow_run_id or ""


def _move_id(rollout_id: str) -> str:
    """The same for every attempt of this activity, different for every other move."""
    return f"{rollout_id}/{_run_id()}/{activity.info().activity_id}"


class RolloutActivities:
    def __init__(self, pool: DbPool, registry: ModelRegistry) -> None:
        self.pool = pool
        self.registry = registry

    async def _hold(self, rollout_id: str, run_id: str, candidate: str) -> dict[str, Any] | None:
        """Take the model line for this rollout; the other rollout holding it, if one still runs. A
        holder whose workflow no longer runs (terminated, failed: it never let go) is released."""
        for _ in range(3):
            async with self.pool.connection() as conn, conn.transaction():
                holder = await rollouts.take_lease(conn, rollout_id=rollout_id, run_id=run_id,
                                                   candidate_version=candidate)
            if holder["rollout_id"] == rollout_id:
                return None
            if await rollouts.holder_running(activity.client(), holder):
                return dict(holder)
            async with self.pool.connection() as conn:
                await rollouts.release_lease(conn, rollout_id=holder["rollout_id"], run_id=holder["run_id"])
            log.info("stale rollout lease released", holder=holder["rollout_id"], rollout_id=rollout_id)
        raise RuntimeError("the model line's lease kept changing hands; retrying")

    @activity.defn
    async def begin_rollout(self, input: BeginRolloutInput) -> RolloutBegun:
        """Hold the model line and read its revision; the production version the candidate replaces.
        Refuses a candidate that is not registered or is production already; answers `held_by` (and
        holds nothing) while another rollout holds the line. A retry finds the line held already."""
        if await asyncio.to_thread(self.registry.get, input.candidate_version) is None:
            raise RolloutRefusal.UNKNOWN_VERSION.error(f"no model version {input.candidate_version!r}")
        production = (await asyncio.to_thread(self.registry.aliases)).get("production")
        if production is None:
            raise RolloutRefusal.INVALID.error("no production version to roll out against")
        if production == input.candidate_version:
            raise RolloutRefusal.SAME_AS_PRODUCTION.error(f"{production} is production already")
        holder = await self._hold(input.rollout_id, _run_id(), input.candidate_version)
        if holder is not None:
            log.info("rollout skipped: the line is held", rollout_id=input.rollout_id, holder=holder["rollout_id"])
            return RolloutBegun(production, None, holder["rollout_id"], holder["candidate_version"])
        line = await asyncio.to_thread(self.registry.line)
        production = line.aliases.get("production") or production
        log.info("rollout begun", rollout_id=input.rollout_id, candidate=input.candidate_version, production=production,
                 revision=line.revision)
        return RolloutBegun(production, line.revision)

    @activity.defn
    async def skip_rollout_if_line_busy(self, input: LineCheckInput) -> LineCheck:
        """A retraining's hand-off: while another rollout holds the model line, record this one as
        skipped (its row, the holder named) instead of starting it. The rollout that starts next still
        takes the line itself: one that loses a race past this check ends skipped too."""
        async with self.pool.connection() as conn:
            holder = await rollouts.lease_holder(conn)
        if holder is None or holder["rollout_id"] == input.rollout_id:
            return LineCheck()
        if not await rollouts.holder_running(activity.client(), holder):
            return LineCheck()  # stale: the rollout that starts releases it
        reason = f"skipped: {line_held(holder['rollout_id'], holder['candidate_version'])}"
        production = (await asyncio.to_thread(self.registry.aliases)).get("production")
        async with self.pool.connection() as conn:
            await rollouts.upsert(
                conn, rollout_id=input.rollout_id, candidate_version=input.candidate_version,
                previous_version=production, status=RolloutStatus.SKIPPED, stage="skipped", split={}, gates=[],
                reason=reason, requested_by=input.requested_by, started_at=datetime.fromisoformat(input.started_at),
                finished_at=datetime.now(UTC))
        log.info("auto-rollout skipped", rollout_id=input.rollout_id, holder=holder["rollout_id"])
        return LineCheck(holder["rollout_id"], reason)

    @activity.defn
    async def apply_stage(self, input: ApplyStageInput) -> LineMoved:
        """Make the stage's split live (serving re-reads it within seconds, loading the candidate before it
        sends it a frame), and point the `shadow` alias at the shadowing version: one transaction, only
        if the line is still at the rollout's revision (`conflict` otherwise, nothing applied)."""
        c, p = input.candidate_version, input.production_version
        if input.kind == StageKind.SHADOW:
            split = TrafficSplit((), c, input.share, rollout_id=input.rollout_id)
        elif input.kind == StageKind.CANARY:
            split = TrafficSplit.canary(c, p, input.share, rollout_id=input.rollout_id)
        else:
            split = TrafficSplit(rollout_id=input.rollout_id)
        shadow = c if input.kind == StageKind.SHADOW else None
        try:
            moved = await asyncio.to_thread(self.registry.move, LineMove({"shadow": shadow}, split), input.revision,
                                            _move_id(input.rollout_id), input.changed_by, input.reason)
        except RevisionConflict as conflict:
            log.warning("rollout stage refused: the line moved", rollout_id=input.rollout_id, stage=input.reason,
                        conflict=str(conflict))
            return LineMoved(conflict.current, str(conflict))
        async with self.pool.connection() as conn, conn.transaction():
            await audit_log.append_once(conn, action="rollout.traffic", resource=f"traffic:{input.reason}",
                                        workflow_id=input.rollout_id, key_name=input.changed_by, role=None,
                                        details=split.as_dict())
        log.info("rollout traffic", rollout_id=input.rollout_id, stage=input.reason, split=split.as_dict())
        return LineMoved(moved.revision, production=p)

    @activity.defn
    async def stage_metrics(self, input: StageMetricsInput) -> StageMetrics:
        async with self.pool.connection() as conn:
            f = await rollouts.stage_figures(conn, candidate=input.candidate_version,
                                             production=input.production_version,
                                             shadow=input.kind == StageKind.SHADOW,
                                             since=datetime.fromisoformat(input.since),
                                             low_confidence=input.low_confidence)
            pairs = [] if input.kind != StageKind.SHADOW else await rollouts.shadow_box_pairs(
                conn, candidate=input.candidate_version, production=input.production_version,
                since=datetime.fromisoformat(input.since))
        if pairs:  # detection versions: they agree on a frame when their box sets do (vision.boxes.agree)
            f = {**f, "compared": len(pairs), "agreement": box_agreement(pairs)}
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
        """The rollout's row; a finished rollout also lets go of the model line (if this run holds it)."""
        s = input.state
        async with self.pool.connection() as conn, conn.transaction():
            await rollouts.upsert(
                conn, rollout_id=s.rollout_id, candidate_version=s.candidate_version,
                previous_version=s.previous_version, status=s.status, stage=s.stage,
                split={"weights": s.split, "shadow_share": s.shadow_share},
                gates=[asdict(g) for g in s.gates], reason=s.reason, requested_by=s.requested_by,
                started_at=datetime.fromisoformat(s.started_at),
                finished_at=datetime.fromisoformat(s.finished_at) if s.finished_at else None)
            if s.status in FINISHED:
                await rollouts.release_lease(conn, rollout_id=s.rollout_id, run_id=_run_id())

    async def _audit(self, input: AliasMoveInput, action: str, before: str | None, after: str | None,
                     left: str | None) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await audit_log.append_once(conn, action=action, resource=f"model_alias:production:{after}",
                                        workflow_id=input.rollout_id, key_name=input.changed_by,
                                        role=input.role or None,
                                        details={"from": before, "to": after, "reason": input.reason,
                                                 "candidate": input.candidate_version, "left": left})
        log.info(action, rollout_id=input.rollout_id, production=after, reason=input.reason, left=left)

    @activity.defn
    async def promote(self, input: AliasMoveInput) -> LineMoved:
        """Production to the candidate, the split and the shadow cleared, the candidate alias released:
        one transaction, only if the line is still at the rollout's revision (`conflict` otherwise)."""
        move = LineMove({"production": input.candidate_version, "shadow": None},
                        TrafficSplit(rollout_id=input.rollout_id), release_candidate=input.candidate_version)
        try:
            moved = await asyncio.to_thread(self.registry.move, move, input.revision, _move_id(input.rollout_id),
                                            input.changed_by, input.reason)
        except RevisionConflict as conflict:
            log.warning("promotion refused: the line moved", rollout_id=input.rollout_id, conflict=str(conflict))
            return LineMoved(conflict.current, str(conflict))
        before = next((c["from"] for c in moved.changes if c.get("alias") == "production"), input.previous_version)
        await self._audit(input, "rollout.promote", before, input.candidate_version, None)
        return LineMoved(moved.revision, production=input.candidate_version)

    @activity.defn
    async def roll_back(self, input: AliasMoveInput) -> LineMoved:
        """Everything back to the previous version: the split and the shadow cleared, the candidate alias
        released, in one transaction on the rollout's revision (production never moved while it ran).
        If the line moved outside the rollout since its last move (a promotion made by hand, say), only
        what is still the rollout's own is undone, and production is left as whoever set it (`left`)."""
        move_id = _move_id(input.rollout_id)
        moved = None
        if input.revision is not None:
            undo = LineMove({"shadow": None}, TrafficSplit(rollout_id=input.rollout_id),
                            release_candidate=input.candidate_version)
            with contextlib.suppress(RevisionConflict):
                moved = await asyncio.to_thread(self.registry.move, undo, input.revision, move_id, input.changed_by,
                                                input.reason)
        if moved is None:
            moved = await self._undo_own(input, move_id)
        left = moved.details.get("left")
        after = moved.details.get("production", input.previous_version)
        await self._audit(input, "rollout.rollback", input.previous_version, after, left)
        return LineMoved(moved.revision, production=after, left=left)

    async def _undo_own(self, input: AliasMoveInput, move_id: str) -> MoveResult:
        """Roll back on a line that moved outside the rollout (or of a run begun before revisions): clear
        the split and the shadow alias only while they are still this rollout's, and leave production as
        it is now. On the revision read here; read again if it moves meanwhile."""
        for _ in range(5):
            line = await asyncio.to_thread(self.registry.line)
            production = line.aliases.get("production")
            left = None
            if production != input.previous_version:
                last = (await asyncio.to_thread(self.registry.alias_history, "production"))[-1:]
                who = f" as {last[0].changed_by} set it" + (f" ({last[0].reason})" if last[0].reason else "") \
                    if last else ""
                left = (f"production left at {production or 'no version'}{who} after this rollout began,"
                        f" not put back to {input.previous_version}")
            own_shadow = line.aliases.get("shadow") == input.candidate_version
            own_split = line.traffic.rollout_id == input.rollout_id
            move = LineMove({"shadow": None} if own_shadow else {},
                            TrafficSplit(rollout_id=input.rollout_id) if own_split else None,
                            release_candidate=input.candidate_version, details={"left": left, "production": production})
            with contextlib.suppress(RevisionConflict):
                return await asyncio.to_thread(self.registry.move, move, line.revision, move_id, input.changed_by,
                                               input.reason)
        raise RuntimeError("the model line kept moving while the rollout rolled back; retrying")


# The boxes each version would act on: those scoring at least this (vision.detector.FRAME_DEFECT_SCORE).
AGREEMENT_BOX_SCORE = 0.5


def box_agreement(pairs: list[dict]) -> float:
    """The share of frames whose shadow and production box sets agree: every box of each matched one to
    one, same class, at IoU >= vision.boxes' default 0.5, counting the boxes each scores >= 0.5."""
    def acted_on(items: list[dict]) -> list:
        return [b for b in boxes_from(items) if (b.score if b.score is not None else 1.0) >= AGREEMENT_BOX_SCORE]

    agreed = sum(agree(acted_on(p["shadow_boxes"]), acted_on(p["production_boxes"])) for p in pairs)
    return agreed / len(pairs)
