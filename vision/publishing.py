"""Turning a trained model into a registered version: export, publish the artifact set, register.

`bootstrap` is what `sightline model bootstrap` and a first `python -m serving.deploy` run: train
version 1 on generated frames and make it production.
"""

from __future__ import annotations

from collections.abc import Callable

from infra.store import ObjectStore
from vision.artifacts import ONNX, WEIGHTS, publish
from vision.model import export_onnx, weights_bytes
from vision.registry import ModelRegistry, ModelVersion
from vision.training import TrainingConfig, TrainingResult, train


def register_trained(registry: ModelRegistry, store: ObjectStore, result: TrainingResult,
                     parent_version: str | None = None, created_by: str = "") -> ModelVersion:
    version, number = registry.reserve_version()
    files = {WEIGHTS: weights_bytes(result.model), ONNX: export_onnx(result.model, result.processing)}
    _, manifest_key, manifest_sha = publish(store, version, result.architecture, result.processing, files,
                                            result.metrics, parent_version, result.dataset_snapshot_id, result.config)
    return registry.register(version, number, result.architecture, manifest_key, manifest_sha, parent_version,
                             result.dataset_snapshot_id, result.metrics, created_by)


def bootstrap(registry: ModelRegistry, store: ObjectStore, config: TrainingConfig | None = None,
              promote: bool = True, progress: Callable[[dict], None] | None = None,
              created_by: str = "bootstrap") -> ModelVersion:
    """Train a first version and, when `promote` and no production model exists yet, make it production."""
    result = train(config or TrainingConfig(), progress)
    registered = register_trained(registry, store, result, None, created_by)
    if promote and "production" not in registry.aliases():
        registry.set_alias("production", registered.version, created_by, "bootstrap: first trained version")
        registered = registry.resolve(registered.version)  # now with its alias
    return registered
