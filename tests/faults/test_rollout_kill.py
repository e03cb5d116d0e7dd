"""Rollouts driven with `sightline rollout` on the fault suite's stack, through real serving, live
batches and real models.

- A candidate trained on shuffled labels is rolled back at the shadow gate by the settings' own
  thresholds: production never moves and none of the candidate's answers is acted on.
- A good candidate (the session's tiny model registered again under a new version, so its gates pass
  on their merits), its worker SIGKILLed in the middle of a canary stage and brought back with
  `sightline up`: the aliases and the split stay consistent while it is away, the rollout picks up
  where it was and promotes, every alias and split change is recorded once, and every frame of the
  live traffic meanwhile has exactly one prediction, made by production or by the candidate.

Gate verdicts on scripted figures are tests/test_rollout.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from bench.ingest import Load
from infra.db import DbPool, open_pool
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.temporal import connect
from tests.faults.checks import settled
from tests.faults.harness import FaultStack, Ingest, ingesting, sightline
from tests.polling import eventually, in_background
from tests.serving_fixtures import TINY
from vision.camera import NORMAL, generate_frames
from vision.datasets import SplitArrays
from vision.publishing import register_trained
from vision.registry import ModelRegistry
from vision.signatures import signer_from_settings
from vision.training import TrainingResult
from workflows.rollout import ModelRolloutWorkflow
from workflows.rollout_types import RolloutStatus, rollout_workflow_id

pytest_plugins = ["tests.serving_fixtures"]

PLAN = ["--shadow-share", "0.5", "--canary", "0.25", "--canary", "0.5", "--min-frames", "24",
        "--min-duration-s", "2", "--poll-interval-s", "0.5", "--no-approval",
        # The same weights answer both sides, so these rates differ only by which frames each side saw;
        # on a few dozen frames that noise alone could fail a 0.15 margin. Agreement stays gated.
        "--threshold", "max_low_confidence_increase=1", "--threshold", "max_unfamiliar_increase=1"]


def train_on_shuffled_labels() -> TrainingResult:
    """The tiny model trained on the same generated frames with their training labels permuted: it has
    learned nothing about defects."""
    from vision import training

    real = training.generated_splits

    def shuffled(*args: Any, **kwargs: Any) -> dict[str, SplitArrays]:
        splits = real(*args, **kwargs)
        train = splits["train"]
        splits["train"] = SplitArrays(train.x, np.random.default_rng(7).permutation(train.y), train.reviewed)
        return splits

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "generated_splits", shuffled)
        return training.train(TINY)


def register(stack: FaultStack, registry: ModelRegistry, trained: TrainingResult) -> str:
    """A new version of `trained`, signed with the stack's key (the one its serving trusts)."""
    return register_trained(registry, store_from_settings(stack.settings), trained, created_by="fault suite",
                            signer=signer_from_settings(stack.settings)).version


def normal_frames() -> list[bytes]:
    return [f.jpeg() for f in generate_frames("rollout", 16, seed=5, conditions=NORMAL)]


@contextlib.asynccontextmanager
async def live_traffic(ingest: Ingest, frames: list[bytes]) -> AsyncIterator[None]:
    """Batches from two clients, one short load after another (each on a camera of its own, so the
    idempotency keys of one never repeat another's), until the block ends."""
    async def loop() -> None:
        for n in range(10_000):
            await Load(frames, 8, 2, 3.0, seed=100 + n).run(ingest.sender(f"{ingest.site_id}-{n:04d}"))

    async with in_background(loop()):
        yield


async def one_prediction_per_frame(pool: DbPool, batch_ids: list[str]) -> dict[str, int]:
    """Frames per model version; fails unless every accepted frame has exactly one prediction."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT f.frame_id, array_remove(array_agg(p.model_version), NULL) AS versions FROM frames f"
            " LEFT JOIN predictions p USING (frame_id) WHERE f.batch_id = ANY(%s) AND f.status = 'accepted'"
            " GROUP BY f.frame_id", (batch_ids,))
        frames = await cur.fetchall()
    wrong = {f["frame_id"]: f["versions"] for f in frames if len(f["versions"]) != 1}
    assert not wrong, f"{len(wrong)} frames without exactly one prediction: {dict(list(wrong.items())[:5])}"
    counts: dict[str, int] = {}
    for f in frames:
        counts[f["versions"][0]] = counts.get(f["versions"][0], 0) + 1
    return counts


def split_of(row: dict[str, Any]) -> tuple[Any, ...]:
    return (tuple((w["version"], w["weight"]) for w in row["weights"]), row["shadow_version"], row["shadow_share"])


@pytest.mark.timeout(900)
async def test_a_candidate_trained_on_shuffled_labels_is_rolled_back_at_the_shadow_gate(
        fault_stack: FaultStack) -> None:
    stack = fault_stack
    url = database_url(stack.settings)
    registry = ModelRegistry(url)
    production = registry.aliases()["production"]
    candidate = register(stack, registry, await asyncio.to_thread(train_on_shuffled_labels))
    rollout_id = rollout_workflow_id(candidate)
    # The settings' plan and gates; only short stages.
    started = await asyncio.to_thread(sightline, stack.env, "rollout", "start", candidate, "--shadow-share", "0.5",
                                      "--min-frames", "24", "--min-duration-s", "2", "--poll-interval-s", "0.5")
    assert started.returncode == 0, f"{started.stdout}\n{started.stderr}"

    temporal = await connect(stack.settings.temporal_address, stack.settings.temporal_namespace)
    async with open_pool(url) as pool:
        async with ingesting(stack, pool, "shuffled") as ingest:
            async with live_traffic(ingest, normal_frames()):
                handle = temporal.get_workflow_handle_for(ModelRolloutWorkflow.run, rollout_id)
                result = await asyncio.wait_for(handle.result(), 300)
            await ingest.resubmit_pending()
        batch_ids = sorted(ingest.accepted)
        await eventually(lambda: settled(pool, temporal, batch_ids, ingest.site_id), timeout=300, interval=0.5,
                         message=f"all {len(batch_ids)} accepted batches to finish")
        by_version = await one_prediction_per_frame(pool, batch_ids)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM shadow_predictions WHERE model_version = %s",
                                     (candidate,))
            shadowed = (await cur.fetchone() or {"n": 0})["n"]

    assert result.status == RolloutStatus.ROLLED_BACK, f"{result.status}: {result.gates}"
    assert [g.stage for g in result.gates] == ["shadow 50%"] and not result.gates[0].passed
    failed = {c.name for c in result.gates[0].checks if not c.passed}
    assert failed & {"agreement", "low_confidence_rate"}, result.gates[0].checks
    assert registry.aliases()["production"] == production and registry.traffic().weights == ()
    assert registry.traffic().shadow_version is None
    # The candidate answered in the shadow only: kept apart, never a prediction a batch acted on.
    assert shadowed >= 24 and set(by_version) == {production}, (shadowed, by_version)


@pytest.mark.timeout(900)
async def test_a_worker_killed_mid_rollout_leaves_the_aliases_consistent_and_the_rollout_finishes(
        fault_stack: FaultStack, trained_model: TrainingResult) -> None:
    stack = fault_stack
    url = database_url(stack.settings)
    registry = ModelRegistry(url)
    production = registry.aliases()["production"]
    candidate = register(stack, registry, trained_model)
    rollout_id = rollout_workflow_id(candidate)
    history_before = len(registry.traffic_history())

    started = await asyncio.to_thread(sightline, stack.env, "rollout", "start", candidate, *PLAN,
                                      "--reason", "fault suite: kill the worker mid-rollout")
    assert started.returncode == 0, f"{started.stdout}\n{started.stderr}"
    assert f"rollout started: {rollout_id}" in started.stdout
    again = await asyncio.to_thread(sightline, stack.env, "rollout", "start", candidate)
    assert again.returncode == 2 and "refused (409)" in again.stdout, f"{again.stdout}\n{again.stderr}"

    frames = normal_frames()
    temporal = await connect(stack.settings.temporal_address, stack.settings.temporal_namespace)
    handle = temporal.get_workflow_handle_for(ModelRolloutWorkflow.run, rollout_id)
    async with open_pool(url) as pool:
        async with ingesting(stack, pool, "rollout") as ingest:
            async with live_traffic(ingest, frames):
                async def in_canary() -> bool:
                    return any(v == candidate for v, _ in registry.traffic().weights)

                await eventually(in_canary, timeout=300, message="the rollout's first canary stage")
                killed = stack.kill("worker")
                # While the worker is away, nothing moves: production is still production, the split the
                # rollout set stays, and the API still takes batches.
                split = registry.traffic()
                assert registry.aliases()["production"] == production
                assert split.rollout_id == rollout_id and candidate in dict(split.weights)
                accepted = len(ingest.accepted)
                await eventually(lambda: asyncio.sleep(0, result=len(ingest.accepted) > accepted), timeout=60,
                                 message="a batch accepted while the worker is away")
                await asyncio.to_thread(stack.up)
                assert stack.pid("worker") != killed
                result = await asyncio.wait_for(handle.result(), 420)
            await ingest.resubmit_pending()

        assert result.status == RolloutStatus.PROMOTED, f"{result.status}: {result.reason}"
        assert [g.stage for g in result.gates] == ["shadow 50%", "canary 25%", "canary 50%"]
        assert all(g.passed for g in result.gates)
        aliases = registry.aliases()
        assert aliases["production"] == candidate and "shadow" not in aliases and "candidate" not in aliases
        assert registry.traffic().weights == () and registry.traffic().shadow_version is None
        # Each change once, retried activities or not: one move of production, and the split's history
        # goes shadow, canary 25%, canary 50%, cleared, with no change written twice.
        moves = [h for h in registry.alias_history("production") if h.to_version == candidate]
        assert [(h.from_version, h.to_version) for h in moves] == [(production, candidate)]
        splits = [split_of(row) for row in registry.traffic_history()[history_before:]]
        assert splits == [((), candidate, 0.5), (((candidate, 0.25), (production, 0.75)), None, 0.0),
                          (((candidate, 0.5), (production, 0.5)), None, 0.0), ((), None, 0.0)], splits

        batch_ids = sorted(ingest.accepted)
        await eventually(lambda: settled(pool, temporal, batch_ids, ingest.site_id), timeout=300, interval=0.5,
                         message=f"all {len(batch_ids)} accepted batches to finish")
        by_version = await one_prediction_per_frame(pool, batch_ids)
        assert set(by_version) <= {production, candidate} and by_version.get(candidate), by_version
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT action, count(*) AS n FROM audit_log WHERE workflow_id = %s"
                                     " GROUP BY action", (rollout_id,))
            audit = {r["action"]: r["n"] for r in await cur.fetchall()}
        assert audit.get("rollout.start") == 1 and audit.get("rollout.promote") == 1, audit

    shown = await asyncio.to_thread(sightline, stack.env, "rollout", "show", rollout_id)
    assert shown.returncode == 0 and "promoted" in shown.stdout and "canary 50%" in shown.stdout, shown.stdout
    listed = await asyncio.to_thread(sightline, stack.env, "rollout", "list", "--status", "promoted")
    assert listed.returncode == 0 and rollout_id in listed.stdout, listed.stdout
