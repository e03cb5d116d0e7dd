"""The detection loop end to end, on the suite's real Temporal, Postgres and store: a detection production
version; reviewed frames decided with box sets; a RetrainingWorkflow that fine-tunes a detection
candidate from production on them, compares the two on mAP@0.5 and registers a signed detector with its
card; then that candidate's ModelRolloutWorkflow against live traffic recorded with boxes, promoted when
its boxes agree with production's. A candidate whose boxes disagree (moved off the defect, or naming
another class) is rolled back at the shadow gate, which judges box agreement, not the frames' labels.

The aliases and the split are put back afterwards: other tests expect the session's classifier."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import onnxruntime as ort
import pytest
import pytest_asyncio
from psycopg.types.json import Jsonb
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from activities.rollout import box_agreement
from api.services.retraining import RetrainingService
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore
from tests.loop_support import insert_stored_frames, loop_workers, one_row, session_signing_key
from tests.review_support import fetch_all
from tests.rollout_support import DETECTS, MISNAMES, MISPLACES, Behaviour, LiveTraffic
from vision.artifacts import CARD, NOVELTY, ONNX, REFERENCE, WEIGHTS, load_verified
from vision.camera import GeneratedFrame, generate_frames
from vision.detector import DETECTION, DETECTOR_ARCHITECTURE
from vision.detector_training import DEFECT_CLASSES, DETECTOR_PROFILES, train_detector
from vision.publishing import register_trained
from vision.registry import ModelRegistry, ModelVersion
from vision.signatures import trusted_keys_from_settings
from vision.traffic import TrafficSplit
from workflows.retraining_types import (
    Outcome,
    RetrainingResult,
    RetrainingTrigger,
    beats_production,
    compared_metric,
)
from workflows.rollout import ModelRolloutWorkflow
from workflows.rollout_types import RolloutState, RolloutStatus, plan_from, rollout_workflow_id

pytest_plugins = ["tests.serving_fixtures", "tests.loop_support"]

# Stages of seconds (tests/test_rollout.py's): half the frames shadowed, then canaries of 10% and 50%.
FAST_ROLLOUT = {"shadow_share": 0.5, "canary_steps": [0.1, 0.5], "stage_min_frames": 30,
                "stage_min_duration_s": 0.5, "poll_interval_s": 0.3}
# About 20 shadowed frames a batch: three batches. (Box agreement on them: about 0.9 for versions that find
# the same boxes, about 0.2 for boxes elsewhere, which agree only on the "ok" quarter of the frames.)
SHADOW_MIN_FRAMES = 60


@dataclass
class DetectionVersions:
    production: ModelVersion  # made production for each test
    sibling: ModelVersion     # another detection version, its child: the candidate the disagreement cases roll out


@pytest.fixture(scope="module")
def detection_versions(registry: ModelRegistry, model_store) -> DetectionVersions:
    """The tiny detector (seconds: what the machinery moves, not a detector for real cameras), trained once
    and registered twice."""
    trained = train_detector(DETECTOR_PROFILES["tiny"])
    production = register_trained(registry, model_store, trained, created_by="tests")
    sibling = register_trained(registry, model_store, trained, production.version, created_by="tests")
    assert production.task == sibling.task == DETECTION
    return DetectionVersions(production, sibling)


@pytest.fixture
def detection_production(registry: ModelRegistry, detection_versions: DetectionVersions) -> Iterator[ModelVersion]:
    """The detection version made production for the test; the aliases and the split as they were
    afterwards (tests/test_rollout.py's rollout_env does the same)."""
    aliases = registry.aliases()
    production = detection_versions.production
    registry.set_alias("production", production.version, "tests", "detection production of the loop test")
    try:
        yield production
    finally:
        registry.set_traffic(TrafficSplit(), "tests", "reset after the detection loop test")
        for alias in ("production", "candidate", "shadow"):
            registry.set_alias(alias, aliases.get(alias), "tests", "restore after the detection loop test")


@dataclass
class LoopEnv:
    settings: Settings
    service: RetrainingService
    rollouts: list[WorkflowHandle[ModelRolloutWorkflow, RolloutState]] = field(default_factory=list)


@pytest_asyncio.fixture
async def loop_env(temporal_client: Client, db_pool: DbPool, model_store, registry: ModelRegistry,
                   detection_production: ModelVersion, settings_factory) -> AsyncIterator[LoopEnv]:
    settings = settings_factory(
        object_store_url=f"file://{model_store.root}", model_signing_key=session_signing_key(),
        retraining_profile="micro", retraining_epochs=2, retraining_reviewed_holdout_pct=25,
        retraining_min_improvement=0.0, training_heartbeat_timeout_s=10,
        **{f"rollout_{k}": v for k, v in FAST_ROLLOUT.items()})
    env = LoopEnv(settings, RetrainingService(db_pool, model_store, temporal_client, settings))
    try:
        async with loop_workers(temporal_client, db_pool, model_store, settings, registry):
            yield env
    finally:  # a rollout a failed test left running would hold the model line for later tests
        for handle in env.rollouts:
            with suppress(Exception):
                if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("the detection loop test ended")


async def record_reviewed_boxes(pool: DbPool, store: ObjectStore, frames: Sequence[GeneratedFrame],
                                site_id: str = "plant-detect") -> list[str]:
    """Frames stored and recorded, each with a decided detection review task whose final box set is the
    frame's drawn boxes ([] for "ok") and the reviewer's label row beside it: what reviewers' box
    decisions leave behind (tests.loop_support.record_reviewed_frames, with boxes)."""
    batch_id = f"batch-reviewed-boxes-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    async with pool.connection() as conn, conn.transaction():
        stored = await insert_stored_frames(conn, store, batch_id, site_id, frames)
        for frame_id, key, frame in stored:
            boxes = Jsonb([b.as_dict() for b in frame.boxes])
            # The model saw nothing (its boxes []); the reviewer drew the defect where it is.
            await conn.execute(
                """INSERT INTO review_tasks (review_id, version, run_id, frame_id, batch_id, object_key, camera_id,
                       site_id, reason, predicted_label, confidence, classes, status, priority, final_label,
                       corrected, boxes, final_boxes, created_at, decided_at)
                   VALUES (%s, 1, 'r', %s, %s, %s, 'cam-reviewed', %s, 'low_confidence', 'ok', 0.5,
                           '{ok,scratch,dent,stain}', 'decided', 1, %s, %s, '[]', %s, %s, %s)""",
                (f"review-{frame_id}", frame_id, batch_id, key, site_id, frame.label, frame.label != "ok", boxes,
                 now, now))
            await conn.execute(
                """INSERT INTO review_labels (review_id, frame_id, batch_id, object_key, label, reviewer_id,
                       decided_at, predicted_label, model_confidence, is_correction, boxes)
                   VALUES (%s, %s, %s, %s, %s, 'key-reviewer', %s, 'ok', 0.5, %s, %s)""",
                (f"review-{frame_id}", frame_id, batch_id, key, frame.label, now, frame.label != "ok", boxes))
    return [frame_id for frame_id, _, _ in stored]


async def start_rollout(client: Client, env: LoopEnv, candidate: str
                        ) -> WorkflowHandle[ModelRolloutWorkflow, RolloutState]:
    plan = plan_from(candidate, env.settings.rollout_defaults(), "tests", "detection rollout")
    # The shadow gate judged on at least SHADOW_MIN_FRAMES frames: its verdict never hangs on the draw.
    plan.stages[0] = replace(plan.stages[0], min_frames=SHADOW_MIN_FRAMES)
    handle = await client.start_workflow(ModelRolloutWorkflow.run, plan, id=rollout_workflow_id(candidate),
                                         task_queue=env.settings.orchestration_task_queue)
    env.rollouts.append(handle)
    return handle


async def shadow_agreement(pool: DbPool, candidate: str, production: str, since: datetime
                           ) -> tuple[int, float, float]:
    """Over every frame the candidate shadowed since then: (frames, its box agreement with production, the
    share of frames whose labels agree), recomputed from what serving recorded."""
    rows = await fetch_all(pool, "SELECT s.label AS shadow_label, p.label AS production_label, s.boxes AS"
                           " shadow_boxes, p.boxes AS production_boxes FROM shadow_predictions s JOIN predictions p"
                           " ON p.frame_id = s.frame_id AND p.model_version = %s WHERE s.model_version = %s"
                           " AND s.created_at >= %s", production, candidate, since)
    assert rows and all(r["shadow_boxes"] is not None and r["production_boxes"] is not None for r in rows)
    labels = sum(r["shadow_label"] == r["production_label"] for r in rows) / len(rows)
    return len(rows), box_agreement(rows), labels


async def test_a_detection_retraining_run_is_rolled_out_on_box_agreement(
        loop_env: LoopEnv, temporal_client: Client, db_pool: DbPool, model_store, registry: ModelRegistry,
        detection_production: ModelVersion):
    production = detection_production.version
    reviewed = generate_frames("det-reviewed-line", 16, seed=81)
    reviewed_boxes = Counter(b.label for f in reviewed for b in f.boxes)
    assert reviewed_boxes and any(f.label == "ok" for f in reviewed)
    await record_reviewed_boxes(db_pool, model_store, reviewed)

    # ---- retraining: a detection candidate, fine-tuned from production on the reviewed boxes ----
    triggered = await loop_env.service.trigger({}, RetrainingTrigger("manual", "tests", note="detection loop"))
    assert triggered.started and triggered.reviewed_frames >= 16
    handle = temporal_client.get_workflow_handle(triggered.workflow_id, result_type=RetrainingResult)
    result = await asyncio.wait_for(handle.result(), 300)

    assert result.epochs_run == 2 and result.resumed_from_epoch == 0
    evaluation = result.evaluation
    assert evaluation.production_version == production
    assert set(evaluation.candidate) == set(evaluation.production) == {"holdout", "reviewed_holdout"}
    for metrics in (*evaluation.candidate.values(), *evaluation.production.values()):
        assert 0.0 <= metrics["map_50"] <= 1.0 and metrics["frames"] > 0
        assert set(metrics["ap50_by_class"]) == set(DEFECT_CLASSES)
    assert evaluation.candidate["reviewed_holdout"]["frames"] >= 1  # the reviewed boxes took part
    # Candidate and production were compared on mAP@0.5, and the outcome is that comparison's.
    assert compared_metric(evaluation) == "map_50"
    assert beats_production(evaluation, 0.0) == (result.outcome == Outcome.CANDIDATE, result.reason)

    version = registry.get(result.candidate_version)
    assert version is not None and version.task == DETECTION and version.architecture == DETECTOR_ARCHITECTURE
    assert version.parent_version == production and version.training_run_id == triggered.workflow_id
    assert version.metrics["task"] == DETECTION and version.metrics["reviewed_train_frames"] > 0
    card = version.card
    assert card["task"] == DETECTION and card["classes"] == list(DEFECT_CLASSES)
    assert card["parent_version"] == production and card["training"]["fine_tuned_from"] == production
    assert set(card["metrics"]) == {"holdout", "reviewed_holdout"}
    for metrics in card["metrics"].values():
        assert "map_50" in metrics and set(metrics["ap50_by_class"]) == set(DEFECT_CLASSES)
    assert card["evaluation"] == {"production_version": production, "candidate": evaluation.candidate,
                                  "production": evaluation.production}
    # The snapshot counted the reviewed boxes (other tests' reviewed frames may add to them).
    by_class = card["data"]["counts"]["boxes_by_class"]
    assert all(by_class.get(c, 0) >= n for c, n in reviewed_boxes.items()), (by_class, reviewed_boxes)

    # Signed and complete, and its ONNX graph is a detector's (boxes, scores, classes, novelty per frame).
    manifest, files = load_verified(model_store, version.manifest_key, version.manifest_sha256,
                                    (WEIGHTS, ONNX, NOVELTY, REFERENCE, CARD),
                                    trusted_keys=trusted_keys_from_settings(loop_env.settings))
    assert manifest.task == DETECTION and manifest.parent_version == production
    session = ort.InferenceSession(files[ONNX], providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "classes", "novelty"]
    size = manifest.processing.input_size
    boxes, scores, _, _ = session.run(None, {"pixels": np.zeros((2, size, size, 3), np.uint8)})
    assert boxes.shape[0] == scores.shape[0] == 2 and boxes.shape[-1] == 4
    run = await one_row(db_pool, "SELECT status, outcome, candidate_version FROM retraining_runs"
                        " WHERE workflow_id = %s", triggered.workflow_id)
    assert run == {"status": "completed", "outcome": result.outcome, "candidate_version": version.version}

    # ---- rollout: its boxes agree with production's on the shadowed frames; promoted ----
    candidate = version.version
    traffic = LiveTraffic(db_pool, registry, {production: DETECTS, candidate: DETECTS}, seed=26)
    since = datetime.now(UTC)
    async with traffic.running():
        rollout = await start_rollout(temporal_client, loop_env, candidate)
        rolled = await asyncio.wait_for(rollout.result(), 90)
    assert rolled.status == RolloutStatus.PROMOTED, rolled.reason
    assert [g.stage for g in rolled.gates] == ["shadow 50%", "canary 10%", "canary 50%"]
    shadow = rolled.gates[0]
    assert shadow.passed and shadow.metrics.compared == shadow.metrics.frames >= SHADOW_MIN_FRAMES
    agreement = next(c for c in shadow.checks if c.name == "agreement")
    assert agreement.value == shadow.metrics.agreement and agreement.limit == 0.5 and agreement.passed
    assert shadow.metrics.agreement is not None and shadow.metrics.agreement >= 0.7, shadow.metrics
    frames, boxes_agree, _ = await shadow_agreement(db_pool, candidate, production, since)
    assert frames >= shadow.metrics.compared and abs(boxes_agree - shadow.metrics.agreement) < 0.15
    assert registry.aliases()["production"] == candidate and "shadow" not in registry.aliases()
    assert registry.traffic().weights == ()
    canary = await one_row(db_pool, "SELECT count(*) AS n, count(boxes) AS with_boxes FROM predictions"
                           " WHERE model_version = %s", candidate)
    assert canary["n"] > 0 and canary["with_boxes"] == canary["n"]  # it answered boxes once it served


@pytest.mark.parametrize(("behaviour", "labels_agree"), [(MISPLACES, True), (MISNAMES, False)],
                         ids=["boxes-moved", "wrong-class"])
async def test_a_detection_candidate_whose_boxes_disagree_is_rolled_back_at_the_shadow_gate(
        loop_env: LoopEnv, temporal_client: Client, db_pool: DbPool, registry: ModelRegistry,
        detection_production: ModelVersion, detection_versions: DetectionVersions, behaviour: Behaviour,
        labels_agree: bool):
    production, candidate = detection_production.version, detection_versions.sibling.version
    since = datetime.now(UTC)
    async with LiveTraffic(db_pool, registry, {production: DETECTS, candidate: behaviour}, seed=27).running():
        rollout = await start_rollout(temporal_client, loop_env, candidate)
        result = await asyncio.wait_for(rollout.result(), 60)
    assert result.status == RolloutStatus.ROLLED_BACK and len(result.gates) == 1
    gate = result.gates[0]
    assert gate.stage == "shadow 50%" and not gate.passed
    # Only the boxes fail it: the candidate's confidence and familiarity are production's.
    assert {c.name for c in gate.checks if not c.passed} == {"agreement"} and "agreement" in (result.reason or "")
    m = gate.metrics
    assert m.compared == m.frames >= SHADOW_MIN_FRAMES and m.agreement is not None and m.agreement < 0.5, m
    frames, boxes_agree, labels = await shadow_agreement(db_pool, candidate, production, since)
    assert frames >= m.compared and abs(boxes_agree - m.agreement) < 0.15
    # Moved boxes keep the frames' labels: a gate on labels would have passed them (they agree on ~90%).
    assert (labels >= 0.75) if labels_agree else (labels < 0.5), labels
    assert registry.aliases()["production"] == production and registry.traffic().weights == ()
    assert "shadow" not in registry.aliases() and registry.traffic().shadow_version is None
