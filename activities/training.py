"""The `training` task queue's activities: build a dataset snapshot, train a candidate (one long
activity), evaluate it next to production, and register it with its model card, signed.

Training heartbeats every second with its epoch, step and the key of its last checkpoint, writes a
checkpoint to the object store at every epoch, and tells its workflow its progress (a signal per
epoch, which the workflow's `progress` query answers from). An attempt that follows a killed worker
resumes from the newest checkpoint, found in its heartbeat details or under the run's prefix in the
store. A cancel reaches the activity with its next heartbeat's answer; the loop stops before its next
step.

Training runs in a thread (torch releases the GIL), so the event loop keeps heartbeating meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import Any, TypeVar

import torch
from temporalio import activity
from temporalio.client import Client

from activities import metrics
from infra.db import DbPool
from infra.log import get_logger
from infra.settings import Settings
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables import dataset_snapshots
from vision.artifacts import NOVELTY, REFERENCE, WEIGHTS, IntegrityError, Manifest, load_verified
from vision.datasets import (
    SkippedFrame,
    SnapshotError,
    SnapshotManifest,
    SnapshotRequest,
    load_splits,
    materialize,
    read_manifest,
)
from vision.detector import DETECTION, DETECTOR_ARCHITECTURE, load_detector
from vision.detector_training import (
    DEFECT_CLASSES,
    DETECTOR_PROFILES,
    DetectionRecipe,
    evaluate_detector,
    load_detection_splits,
    retrain_detector,
)
from vision.model import load_model, weights_bytes
from vision.novelty import NoveltyModel
from vision.processing import Processing
from vision.profiles import PROFILES
from vision.publishing import model_card, register_trained
from vision.registry import ModelRegistry
from vision.signatures import ModelSigner, trusted_keys_from_settings
from vision.training import EpochCheckpoint, FitParams, TrainingResult, TrainingStopped, evaluate, finish, fit
from workflows.failures import RetrainingFailure
from workflows.retraining_types import (
    PROGRESS_SIGNAL,
    EvaluateInput,
    Evaluation,
    MaterializeSnapshotInput,
    RegisterCandidateInput,
    RegisteredCandidate,
    SnapshotSummary,
    TrainCandidateInput,
    TrainedCandidate,
    TrainingParams,
    TrainingProgress,
)

log = get_logger(__name__)
T = TypeVar("T")

HEARTBEAT_EVERY_S = 1.0
# Between epochs, the workflow hears of progress at most this often (each signal is a history event).
SIGNAL_EVERY_S = 15.0
CHECKPOINTS_KEPT = 2


def detection_recipe(params: TrainingParams) -> DetectionRecipe:
    """What a retraining run's parameters ask of a detection candidate (bench/detection_recovery.py starts
    from the same, so its `default` is what retraining runs)."""
    return DetectionRecipe(epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate,
                           reviewed_share=params.reviewed_share, novelty_percentile=params.novelty_percentile)


def run_prefix(run_id: str) -> str:
    return f"training/{run_id}"


def checkpoint_key(run_id: str, epoch: int) -> str:
    return f"{run_prefix(run_id)}/checkpoints/epoch-{epoch:04d}.pt"


class TrainingActivities:
    def __init__(self, client: Client, pool: DbPool, store: ObjectStore, registry: ModelRegistry, settings: Settings,
                 signer: ModelSigner | None = None) -> None:
        self.client = client
        self.pool = pool
        self.store = store
        self.registry = registry
        self.settings = settings
        self.signer = signer
        self.trusted_keys = trusted_keys_from_settings(settings)

    # ---- running blocking work while heartbeating ---------------------------------------------
    async def _heartbeating(self, fn: Callable[[], T], details: Callable[[], Any], stop: threading.Event) -> T:
        """Run `fn` in a thread, heartbeating `details()` every second. On cancel, set `stop` (which the
        training loop checks before every step), wait for the thread to give up, and re-raise."""
        future: Future[T] = Future()

        def target() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=target, name="training", daemon=True).start()
        wrapped = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({wrapped}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    return wrapped.result()
                activity.heartbeat(details())
        except asyncio.CancelledError:
            stop.set()
            try:
                await asyncio.shield(wrapped)
            except TrainingStopped:
                pass
            except Exception:  # the run ended some other way meanwhile; the cancel still wins
                log.exception("training ended with an error while it was being cancelled")
            raise

    # ---- snapshot -----------------------------------------------------------------------------
    @activity.defn
    async def materialize_snapshot(self, input: MaterializeSnapshotInput) -> SnapshotSummary:
        plan = input.plan
        try:
            request = SnapshotRequest.from_json(await asyncio.to_thread(self.store.get, plan.plan_key))
        except ObjectNotFoundError:
            raise RetrainingFailure.SNAPSHOT_INVALID.error(f"no snapshot plan at {plan.plan_key}") from None
        if request.snapshot_id != plan.snapshot_id:
            raise RetrainingFailure.SNAPSHOT_MISMATCH.error(
                f"the plan at {plan.plan_key} describes {request.snapshot_id}, not {plan.snapshot_id}")
        try:
            manifest, key, digest = await self._heartbeating(lambda: materialize(self.store, request),
                                                             lambda: {"phase": "snapshot"}, threading.Event())
        except SnapshotError as exc:
            raise RetrainingFailure.SNAPSHOT_INVALID.error(str(exc)) from None
        counts = manifest.counts()
        async with self.pool.connection() as conn:
            await dataset_snapshots.upsert(conn, manifest.snapshot_id, key, digest, counts,
                                           datetime.fromisoformat(plan.labels_until))
        log.info("snapshot ready", snapshot_id=manifest.snapshot_id, frames=len(manifest.entries),
                 by_source=counts["by_source"])
        return SnapshotSummary(manifest.snapshot_id, key, digest, counts)

    # ---- training -----------------------------------------------------------------------------
    def _task_of(self, version: str | None) -> str:
        """What a retraining run trains: what the version it would replace answers (a detection
        production version is followed by a detection candidate)."""
        row = self.registry.get(version) if version is not None else None
        return row.task if row is not None else "classification"

    def _parent(self, version: str | None) -> tuple[Manifest, bytes] | None:
        if version is None:
            return None
        row = self.registry.get(version)
        if row is None:
            raise RetrainingFailure.PARENT_INVALID.error(f"no model version {version!r} to fine-tune")
        try:
            manifest, files = load_verified(self.store, row.manifest_key, row.manifest_sha256, (WEIGHTS,),
                                            trusted_keys=self.trusted_keys)
        except IntegrityError as exc:
            raise RetrainingFailure.PARENT_INVALID.error(str(exc)) from None
        return manifest, files[WEIGHTS]

    def _latest_checkpoint(self, run_id: str, heartbeat_key: str | None) -> tuple[str, bytes] | None:
        """The newest checkpoint of this run: the one named by the last heartbeat, or a newer one that
        reached the store after it (heartbeats are throttled; the store is the record)."""
        keys = sorted(self.store.list(f"{run_prefix(run_id)}/checkpoints/"))
        if heartbeat_key and heartbeat_key not in keys and self.store.exists(heartbeat_key):
            keys.append(heartbeat_key)
        for key in reversed(sorted(keys)):
            try:
                return key, self.store.get(key)
            except ObjectNotFoundError:
                continue
        return None

    def _save_checkpoint(self, run_id: str, checkpoint: EpochCheckpoint) -> str:
        key = checkpoint_key(run_id, checkpoint.epoch)
        self.store.put(key, checkpoint.state)
        for old in sorted(self.store.list(f"{run_prefix(run_id)}/checkpoints/"))[:-CHECKPOINTS_KEPT]:
            self.store.delete(old)
        return key

    def _result_key(self, run_id: str) -> str:
        return f"{run_prefix(run_id)}/result"

    def _stored_candidate(self, run_id: str) -> TrainedCandidate | None:
        key = f"{self._result_key(run_id)}/metrics.json"
        if not self.store.exists(key):
            return None
        d = json.loads(self.store.get(key))
        return TrainedCandidate(self._result_key(run_id), d["epochs_run"], d["resumed_from_epoch"], d["final_loss"],
                                d["sets"])

    @activity.defn
    async def train_candidate(self, input: TrainCandidateInput) -> TrainedCandidate:
        info = activity.info()
        done = await asyncio.to_thread(self._stored_candidate, input.run_id)
        if done is not None:  # an earlier attempt finished training; only its completion was lost
            return done
        params = input.params
        if params.profile not in PROFILES or params.epochs < 1 or not 0 <= params.reviewed_share < 1:
            raise RetrainingFailure.INVALID_PARAMETERS.error(f"invalid training parameters: {params}")
        profile = PROFILES[params.profile]
        parent = await asyncio.to_thread(self._parent, input.parent_version if params.init_from_parent else None)
        task = await asyncio.to_thread(self._task_of, input.parent_version)
        if parent is not None:
            processing, architecture = parent[0].processing, parent[0].architecture
        elif task == DETECTION:
            detector_profile = DETECTOR_PROFILES.get(params.profile, DETECTOR_PROFILES["standard"])
            processing = Processing(classes=DEFECT_CLASSES, input_size=detector_profile.input_size)
            architecture = DETECTOR_ARCHITECTURE
        else:
            processing = Processing(classes=tuple(profile.classes), input_size=profile.input_size)
            architecture = profile.architecture
        previous = info.heartbeat_details[0] if info.heartbeat_details else {}
        found = await asyncio.to_thread(self._latest_checkpoint, input.run_id,
                                        previous.get("checkpoint_key") if isinstance(previous, dict) else None)

        progress = TrainingProgress(attempt=info.attempt)
        stop = threading.Event()
        started = time.monotonic()
        signalled = {"at": 0.0, "epoch": -1}
        loop = asyncio.get_running_loop()
        assert info.workflow_id is not None  # the workflow's activity, never a standalone one
        handle = self.client.get_workflow_handle(info.workflow_id)

        def tell_workflow(force: bool) -> None:
            """From the training thread: signal the workflow (at each epoch, and now and then)."""
            now = time.monotonic()
            if not force and now - signalled["at"] < SIGNAL_EVERY_S:
                return
            signalled["at"] = now
            snapshot = TrainingProgress(**vars(progress))
            asyncio.run_coroutine_threadsafe(self._signal(handle, snapshot), loop)

        def on_step(p: dict) -> None:
            progress.epoch, progress.epochs, progress.step, progress.steps = p["epoch"], p["epochs"], p["step"], \
                p["steps"]
            progress.loss, progress.elapsed_s = p["loss"], round(time.monotonic() - started, 1)
            done_steps = p["step"] - progress.resumed_from_epoch * (p["steps"] // max(1, p["epochs"]))
            if done_steps > 0:
                rate = progress.elapsed_s / done_steps
                progress.eta_s = round(rate * (p["steps"] - p["step"]), 1)
            tell_workflow(force=signalled["epoch"] < 0)
            signalled["epoch"] = max(signalled["epoch"], 0)

        def on_epoch(_: dict, capture: Callable[[], EpochCheckpoint]) -> None:
            checkpoint = capture()
            progress.checkpoint_key = self._save_checkpoint(input.run_id, checkpoint)
            metrics.RETRAINING_EPOCHS.inc()
            log.info("epoch done", run_id=input.run_id, epoch=checkpoint.epoch, loss=checkpoint.loss,
                     checkpoint=progress.checkpoint_key)
            tell_workflow(force=True)

        def train() -> TrainingResult:
            if task == DETECTION:
                return train_detection()
            manifest = read_manifest(self.store, input.snapshot.manifest_key, input.snapshot.manifest_sha256)
            skipped: list[SkippedFrame] = []
            splits = load_splits(self.store, manifest, processing, skipped)
            if skipped:
                log.warning("reviewed frames left out of training", run_id=input.run_id, count=len(skipped),
                            frames=[f.frame_id for f in skipped[:20]])
            if stop.is_set():
                raise TrainingStopped("stopped before training")
            resume = found[1] if found else None
            if found:
                progress.resumed_from_epoch = EpochCheckpoint.load(found[1])[0].epoch
                progress.checkpoint_key = found[0]
                log.info("resuming from checkpoint", run_id=input.run_id, checkpoint=found[0],
                         epoch=progress.resumed_from_epoch, attempt=info.attempt)
            fit_params = FitParams(architecture, params.epochs, params.batch_size, params.learning_rate, params.seed,
                                   None, params.reviewed_share)
            train_split = splits["train"]
            outcome = fit(train_split.x, train_split.y, processing, fit_params, reviewed=train_split.reviewed,
                          init_weights=parent[1] if parent else None, resume=resume, on_epoch=on_epoch,
                          on_step=on_step, should_stop=stop.is_set)
            novelty, reference, sets = finish(outcome.model, processing, splits, params.novelty_percentile,
                                              params.reviewed_share)
            metrics = {"sets": sets, "epochs_run": outcome.epochs_run, "resumed_from_epoch": outcome.resumed_from_epoch,
                       "final_loss": outcome.final_loss, "steps": outcome.steps,
                       "train_frames": len(train_split.y), "reviewed_train_frames": int(train_split.reviewed.sum()),
                       # Frames the snapshot named whose bytes changed or went before training read them.
                       "skipped_reviewed_frames": len(manifest.skipped) + len(skipped)}
            return TrainingResult(outcome.model, processing, architecture, metrics, manifest.snapshot_id,
                                  {}, novelty, reference)

        def train_detection() -> TrainingResult:
            """The same run for a detector: reviewed boxes in the snapshot, checkpoints and resume alike."""
            manifest = read_manifest(self.store, input.snapshot.manifest_key, input.snapshot.manifest_sha256)
            skipped: list[SkippedFrame] = []
            splits = load_detection_splits(self.store, manifest, processing, skipped)
            if stop.is_set():
                raise TrainingStopped("stopped before training")
            resume = found[1] if found else None
            if found:
                progress.resumed_from_epoch = EpochCheckpoint.load(found[1])[0].epoch
                progress.checkpoint_key = found[0]
                log.info("resuming from checkpoint", run_id=input.run_id, checkpoint=found[0],
                         epoch=progress.resumed_from_epoch, attempt=info.attempt)
            train_split = splits["train"]
            outcome, novelty, reference, sets = retrain_detector(
                splits, processing, detection_recipe(params), seed=params.seed,
                init_weights=parent[1] if parent else None, resume=resume, on_epoch=on_epoch, on_step=on_step,
                should_stop=stop.is_set)
            model = outcome.model
            metrics = {"sets": sets, "epochs_run": outcome.epochs_run, "resumed_from_epoch": outcome.resumed_from_epoch,
                       "final_loss": outcome.final_loss, "steps": outcome.steps, "task": DETECTION,
                       "train_frames": len(train_split.boxes), "reviewed_train_frames": int(train_split.reviewed.sum()),
                       "skipped_reviewed_frames": len(manifest.skipped) + len(skipped)}
            return TrainingResult(model, processing, architecture, metrics, manifest.snapshot_id, {}, novelty,
                                  reference, task=DETECTION)

        def details() -> dict[str, Any]:
            return {"epoch": progress.epoch, "step": progress.step, "checkpoint_key": progress.checkpoint_key,
                    "loss": progress.loss}

        try:
            result = await self._heartbeating(train, details, stop)
        except SnapshotError as exc:
            raise RetrainingFailure.SNAPSHOT_INVALID.error(str(exc)) from None
        await asyncio.to_thread(self._save_result, input.run_id, result)
        m = result.metrics
        log.info("candidate trained", run_id=input.run_id, epochs_run=m["epochs_run"],
                 resumed_from_epoch=m["resumed_from_epoch"], sets=m["sets"])
        return TrainedCandidate(self._result_key(input.run_id), m["epochs_run"], m["resumed_from_epoch"],
                                m["final_loss"], m["sets"])

    async def _signal(self, handle: Any, progress: TrainingProgress) -> None:
        try:
            await handle.signal(PROGRESS_SIGNAL, progress)
        except Exception as exc:  # progress is a courtesy: never fail training over it
            log.warning("progress signal failed", error=str(exc))

    def _save_result(self, run_id: str, result: TrainingResult) -> None:
        prefix = self._result_key(run_id)
        assert result.novelty is not None
        self.store.put(f"{prefix}/{WEIGHTS}", weights_bytes(result.model))
        self.store.put(f"{prefix}/{NOVELTY}", result.novelty.to_bytes())
        self.store.put(f"{prefix}/{REFERENCE}", json.dumps(result.reference, separators=(",", ":")).encode())
        self.store.put(f"{prefix}/processing.json", json.dumps(
            {"architecture": result.architecture, "processing": result.processing.to_dict(),
             **({"task": result.task} if result.task != "classification" else {})}).encode())
        # Last: its presence says the whole result is there.
        self.store.put(f"{prefix}/metrics.json", json.dumps(result.metrics, sort_keys=True).encode())

    def _load_result(self, candidate: TrainedCandidate, snapshot_id: str) -> TrainingResult:
        prefix = candidate.result_key
        meta = json.loads(self.store.get(f"{prefix}/processing.json"))
        processing = Processing.from_dict(meta["processing"])
        task = meta.get("task", "classification")
        load = load_detector if task == DETECTION else functools.partial(load_model, meta["architecture"])
        model = load(len(processing.classes), self.store.get(f"{prefix}/{WEIGHTS}"))
        metrics = json.loads(self.store.get(f"{prefix}/metrics.json"))
        return TrainingResult(model, processing, meta["architecture"], metrics, snapshot_id, {},
                              NoveltyModel.from_bytes(self.store.get(f"{prefix}/{NOVELTY}")),
                              json.loads(self.store.get(f"{prefix}/{REFERENCE}")), task=task)

    # ---- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, input: EvaluateInput) -> Evaluation:
        manifest: SnapshotManifest = read_manifest(self.store, input.snapshot.manifest_key,
                                                   input.snapshot.manifest_sha256)
        held_out = SnapshotManifest(manifest.snapshot_id, manifest.base, manifest.reviewed_holdout_pct,
                                    [e for e in manifest.entries if e.split in ("holdout", "reviewed_holdout")])
        candidate = self._load_result(input.candidate, input.snapshot.snapshot_id)
        if candidate.task == DETECTION:
            return self._evaluate_detection(input, held_out, candidate)
        models: dict[str, tuple[torch.nn.Module, Processing]] = {"candidate": (candidate.model, candidate.processing)}
        if input.production_version is not None:
            row = self.registry.get(input.production_version)
            if row is not None:
                prod_manifest, files = load_verified(self.store, row.manifest_key, row.manifest_sha256, (WEIGHTS,),
                                                     trusted_keys=self.trusted_keys)
                models["production"] = (load_model(prod_manifest.architecture, len(prod_manifest.processing.classes),
                                                   files[WEIGHTS]), prod_manifest.processing)
        # The same frames for both; each model sees them at its own input size.
        splits_by_size: dict[int, dict] = {}
        results: dict[str, dict[str, dict]] = {}
        for name, (model, processing) in models.items():
            # A reviewed frame changed since training read it is left out of both models' evaluation alike.
            splits = splits_by_size.setdefault(processing.input_size,
                                               load_splits(self.store, held_out, processing, skipped=[]))
            results[name] = {s: evaluate(model, processing, splits[s].x, splits[s].y)
                             for s in ("holdout", "reviewed_holdout") if s in splits and len(splits[s].y)}
        return Evaluation(input.production_version, results["candidate"], results.get("production", {}))

    def _evaluate_detection(self, input: EvaluateInput, held_out: SnapshotManifest,
                            candidate: TrainingResult) -> Evaluation:
        """Candidate and production detectors on the same held-out frames and boxes: mAP@0.5 and AP by
        class per set (vision.detection_metrics), what beats_production compares for detection."""
        models: dict[str, tuple[Any, Processing]] = {"candidate": (candidate.model, candidate.processing)}
        if input.production_version is not None:
            row = self.registry.get(input.production_version)
            if row is not None and row.task == DETECTION:
                prod_manifest, files = load_verified(self.store, row.manifest_key, row.manifest_sha256, (WEIGHTS,),
                                                     trusted_keys=self.trusted_keys)
                models["production"] = (load_detector(len(prod_manifest.processing.classes), files[WEIGHTS]),
                                        prod_manifest.processing)
        results: dict[str, dict[str, dict]] = {}
        by_size: dict[int, dict] = {}
        for name, (model, processing) in models.items():
            splits = by_size.setdefault(processing.input_size,
                                        load_detection_splits(self.store, held_out, processing, skipped=[]))
            results[name] = {s: evaluate_detector(model, processing, splits[s].x, splits[s].boxes)
                             for s in ("holdout", "reviewed_holdout") if s in splits and len(splits[s].boxes)}
        return Evaluation(input.production_version, results["candidate"], results.get("production", {}))

    @activity.defn
    async def evaluate_candidate(self, input: EvaluateInput) -> Evaluation:
        evaluation = await self._heartbeating(lambda: self._evaluate(input), lambda: {"phase": "evaluating"},
                                              threading.Event())
        log.info("candidate evaluated", run_id=input.run_id, candidate=evaluation.candidate,
                 production=evaluation.production)
        return evaluation

    # ---- registration -------------------------------------------------------------------------
    def _register(self, input: RegisterCandidateInput) -> RegisteredCandidate:
        existing = self.registry.of_training_run(input.run_id)
        if existing is not None:  # an earlier attempt registered it; the run has one version
            return RegisteredCandidate(existing.version, existing.manifest_key)
        result = self._load_result(input.candidate, input.snapshot.snapshot_id)
        trigger = input.trigger
        card = model_card(
            result,
            reason={"kind": trigger.kind, "drift_report_id": trigger.drift_report_id,
                    "requested_by": trigger.requested_by, "note": trigger.note},
            data={"snapshot_id": input.snapshot.snapshot_id, "manifest_key": input.snapshot.manifest_key,
                  "counts": input.snapshot.counts},
            evaluation={"production_version": input.evaluation.production_version,
                        "candidate": input.evaluation.candidate, "production": input.evaluation.production},
            parameters=vars(input.params),
            training={"run_id": input.run_id, "epochs_run": input.candidate.epochs_run,
                      "resumed_from_epoch": input.candidate.resumed_from_epoch,
                      "final_loss": input.candidate.final_loss,
                      "fine_tuned_from": input.parent_version if input.params.init_from_parent else None},
        )
        result.config = vars(input.params)
        version = register_trained(self.registry, self.store, result, input.parent_version,
                                   created_by=f"retraining {input.run_id}", signer=self.signer, card=card,
                                   training_run_id=input.run_id)
        return RegisteredCandidate(version.version, version.manifest_key)

    @activity.defn
    async def register_candidate(self, input: RegisterCandidateInput) -> RegisteredCandidate:
        registered = await self._heartbeating(lambda: self._register(input), lambda: {"phase": "registering"},
                                              threading.Event())
        log.info("candidate registered", run_id=input.run_id, version=registered.version)
        return registered
