"""Turning a trained model into a registered version: export, model card, publish the signed artifact
set, register.

`bootstrap` is what `sightline model bootstrap` and a first `python -m serving.deploy` run: train
version 1 on generated frames and make it production (a classifier, or a detector for a
`DetectorConfig`: `SIGHTLINE_BOOTSTRAP_TASK=detection`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from infra.settings import get_settings
from infra.store import ObjectStore
from vision.artifacts import CARD, NOVELTY, ONNX, REFERENCE, WEIGHTS, publish
from vision.model import export_onnx, weights_bytes
from vision.registry import ModelRegistry, ModelVersion
from vision.signatures import ModelSigner, signer_from_settings
from vision.training import TrainingConfig, TrainingResult, train

if TYPE_CHECKING:
    from vision.detector_training import DetectorConfig


def model_card(result: TrainingResult, *, reason: dict[str, Any], data: dict[str, Any] | None = None,
               evaluation: dict[str, Any] | None = None, parameters: dict[str, Any] | None = None,
               training: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a version is and why it exists. `reason`: {"kind": drift|manual|bootstrap, "drift_report_id",
    "requested_by", "note"}; `data`: {"snapshot_id", "counts": by class, source, split}; `evaluation`:
    metrics of this version and of production on the same named sets. `register_trained` adds the
    version, its parent, who and when."""
    return {
        **({"task": result.task} if result.task != "classification" else {}),
        "architecture": result.architecture,
        "classes": list(result.processing.classes),
        "input_size": result.processing.input_size,
        "data": data or {"snapshot_id": result.dataset_snapshot_id},
        "parameters": parameters if parameters is not None else dict(result.config),
        "metrics": result.metrics.get("sets", {}),
        "evaluation": evaluation or {},
        "novelty": result.novelty.summary() if result.novelty else {},
        "reason": reason,
        "training": training or {},
    }


def register_trained(registry: ModelRegistry, store: ObjectStore, result: TrainingResult,
                     parent_version: str | None = None, created_by: str = "", *, signer: ModelSigner | None = None,
                     card: dict[str, Any] | None = None, training_run_id: str | None = None) -> ModelVersion:
    """Publish and register a new version. Signed with `signer`, or with the key from settings (or the
    data dir) when none is given."""
    signer = signer or signer_from_settings(get_settings())
    version, number = registry.reserve_version()
    full_card = {**(card or model_card(result, reason={"kind": "manual", "requested_by": created_by})),
                 "version": version, "parent_version": parent_version, "created_by": created_by,
                 "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "signing_key_id": signer.key_id}
    files = {WEIGHTS: weights_bytes(result.model),
             ONNX: _export(result),
             CARD: json.dumps(full_card, indent=2, sort_keys=True, default=str).encode()}
    if result.novelty is not None:
        files[NOVELTY] = result.novelty.to_bytes()
    if result.reference:
        files[REFERENCE] = json.dumps(result.reference, separators=(",", ":")).encode()
    _, manifest_key, manifest_sha = publish(
        store, version, result.architecture, result.processing, files, result.metrics, parent_version,
        result.dataset_snapshot_id, result.config, signer=signer,
        novelty=result.novelty.summary() if result.novelty else None, task=result.task)
    return registry.register(version, number, result.architecture, manifest_key, manifest_sha, parent_version,
                             result.dataset_snapshot_id, result.metrics, created_by, card=full_card,
                             training_run_id=training_run_id, signature_key_id=signer.key_id, task=result.task)


def _export(result: TrainingResult) -> bytes:
    if result.task == "detection":
        from vision.detector import export_detector_onnx

        return export_detector_onnx(result.model, result.processing, result.novelty)  # type: ignore[arg-type]
    return export_onnx(result.model, result.processing, result.novelty)


def bootstrap(registry: ModelRegistry, store: ObjectStore, config: TrainingConfig | DetectorConfig | None = None,
              promote: bool = True, progress: Callable[[dict], None] | None = None,
              created_by: str = "bootstrap", signer: ModelSigner | None = None) -> ModelVersion:
    """Train a first version and, when `promote` and no production model exists yet, make it production.
    A `DetectorConfig` trains a detector: its card's metrics carry mAP and AP by class per set."""
    from vision.detector_training import DetectorConfig, train_detector

    config = config or TrainingConfig()
    result = train_detector(config, progress) if isinstance(config, DetectorConfig) else train(config, progress)
    base = config.base_set()
    counts = {"by_source": {"generated": base.train_frames + base.calibration_frames + base.holdout_frames},
              "by_split": {"train": base.train_frames, "calibration": base.calibration_frames,
                           "holdout": base.holdout_frames}}
    card = model_card(result, reason={"kind": "bootstrap", "requested_by": created_by,
                                      "note": "first version, trained on generated frames"},
                      data={"snapshot_id": result.dataset_snapshot_id, "base": base.to_dict(), "counts": counts})
    registered = register_trained(registry, store, result, None, created_by, signer=signer, card=card)
    if promote and "production" not in registry.aliases():
        registry.set_alias("production", registered.version, created_by, "bootstrap: first trained version")
        registered = registry.resolve(registered.version)  # now with its alias
    return registered
