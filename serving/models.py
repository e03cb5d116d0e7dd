"""Model versions held by one replica: each loaded once from the registry (signature- and sha256-verified:
a version without a valid signature by a trusted key is refused), aliases resolved with a short cache,
and a version's frames classified in chunks.

Shared by the two layouts of the Serve application (serving.app): the classifier deployment of the
pair, which batches concurrent requests into shared passes, and the fused replica on CPU hosts, which
decodes and classifies a request's frames in one process with no hop between replicas.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from infra.log import get_logger
from serving.backends.base import Backend, default_backend, make_backend, optional_files, required_files
from serving.config import ServingConfig
from serving.messages import Classification, ModelDescription, ResolvedModel
from vision.artifacts import Manifest, load_verified
from vision.processing import Decision
from vision.registry import ModelNotFound, ModelRegistry

log = get_logger(__name__)


@dataclass
class LoadedModel:
    manifest: Manifest
    backend: Backend

    @property
    def detects(self) -> bool:
        return self.manifest.task == "detection"

    def detect(self, pixels: np.ndarray) -> list[Decision]:
        """A detection version's decisions (with boxes) for one pass of uint8 NHWC pixels."""
        from vision.detector import decide_detections

        outputs = self.backend.outputs(pixels)  # type: ignore[attr-defined]  # a DetectionBackend
        return decide_detections(self.manifest.processing, outputs)


class ModelSet:
    def __init__(self, config: ServingConfig, backend_name: str, threads: int | None) -> None:
        self.config = config
        self.backend_name = default_backend() if backend_name == "auto" else backend_name
        self.threads = threads
        self.registry = ModelRegistry(config.database_url)
        self.store = config.open_store()
        self.models: dict[str, LoadedModel] = {}
        self._aliases: dict[str, tuple[str, float]] = {}
        self._load_lock = threading.Lock()

    def preload(self) -> None:
        for ref in self.config.preload:
            try:
                self.load(self.registry.resolve(ref).version)
            except ModelNotFound as exc:
                # Start anyway: requests for it get a clear 404 until a version is registered and promoted.
                log.warning("model not preloaded", ref=ref, reason=str(exc))

    def load(self, version: str) -> LoadedModel:
        with self._load_lock:  # two requests for a new version load it once
            if version in self.models:
                return self.models[version]
            row = self.registry.get(version)
            if row is None:
                raise ModelNotFound(f"no model version {version!r}")
            manifest, files = load_verified(self.store, row.manifest_key, row.manifest_sha256,
                                            required_files(self.backend_name),
                                            optional=optional_files(self.backend_name),
                                            trusted_keys=self.config.trusted_keys)
            backend = make_backend(self.backend_name, manifest, files, threads=self.threads)
            self.models[version] = LoadedModel(manifest, backend)
        if not manifest.novelty:
            log.warning("model has no novelty calibration: its frames are never flagged unfamiliar", version=version)
        log.info("model loaded", version=version, backend=backend.name, architecture=manifest.architecture)
        return self.models[version]

    def resolve(self, ref: str) -> str:
        cached = self._aliases.get(ref)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        version = self.registry.resolve(ref).version
        self._aliases[ref] = (version, time.monotonic() + self.config.alias_ttl_s)
        return version

    def describe(self, ref: str) -> ResolvedModel:
        """Resolve an alias or version, load it if needed, and say how to feed it."""
        version = self.resolve(ref)
        model = self.models.get(version) or self.load(version)
        return ResolvedModel(version, model.backend.name, model.manifest.processing)

    def loaded(self) -> list[ModelDescription]:
        return [ModelDescription(version=v, backend=m.backend.name, architecture=m.manifest.architecture,
                                 classes=list(m.manifest.processing.classes),
                                 input_size=m.manifest.processing.input_size, task=m.manifest.task)
                for v, m in self.models.items()]

    def classify(self, version: str, pixels: np.ndarray, chunk: int) -> Classification:
        """uint8 NHWC pixels -> a decision per frame, in order, through passes of at most `chunk` frames:
        onnxruntime on the CPU spends less per frame on passes of 8-32 than on one long one."""
        model = self.models.get(version) or self.load(version)
        started = time.perf_counter()
        step = max(1, chunk)
        if model.detects:
            found = [d for i in range(0, len(pixels), step) for d in model.detect(pixels[i : i + step])]
            return Classification(version, model.backend.name, found,
                                  round((time.perf_counter() - started) * 1000, 2), min(step, len(pixels)))
        logits: list[np.ndarray] = []
        novelty: list[np.ndarray] = []
        for i in range(0, len(pixels), step):
            part_logits, part_novelty = model.backend.scores(pixels[i : i + step])
            logits.append(part_logits)
            if part_novelty is not None:  # a version calibrated for novelty answers it for every pass
                novelty.append(part_novelty)
        infer_ms = (time.perf_counter() - started) * 1000
        scores = np.concatenate(novelty) if novelty else None
        decisions = model.manifest.processing.decide(np.concatenate(logits), scores)
        return Classification(version, model.backend.name, decisions, round(infer_ms, 2), min(step, len(pixels)))
