"""The Ray Serve application: a preprocessing deployment (HTTP ingress, CPU replicas) composed with
`bind()` in front of a classifier deployment that batches frames across requests with `@serve.batch`.

Request path: POST /v1/classify with object keys -> Preprocessor fetches each frame from the object
store, decodes and validates it (vision.decode), resizes it and computes quality features; frames it
cannot use come back as per-frame rejections, never as a failed batch -> Classifier batches the pixels
of concurrent requests, runs the backend, and answers with the version that produced the numbers.
"""

# No `from __future__ import annotations` here: FastAPI must see real types on the ingress methods
# (string annotations on a Serve ingress class are not resolved, and the body would become a query).
import asyncio
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from infra.log import get_logger
from infra.store import InvalidKeyError, LocalStore, ObjectNotFoundError, open_store
from vision.artifacts import IntegrityError, Manifest, load_verified
from serving.backends.base import (
    Backend,
    BackendUnavailable,
    default_backend,
    make_backend,
    required_files,
)
from vision.decode import FrameRejected, decode_frame
from vision.processing import Processing
from vision.quality import quality_features_batch
from vision.registry import ModelNotFound, ModelRegistry
from serving.schema import ClassifyRequest, ClassifyResponse, ErrorBody

log = get_logger(__name__)

APP_NAME = "sightline"
DEFAULT_BATCH = {"max_batch_size": 64, "batch_wait_timeout_s": 0.005}


@dataclass
class ServingConfig:
    """Everything a replica needs to reach its data; plain values so Ray can ship it to any node."""

    database_url: str
    store_url: str
    store_options: dict = field(default_factory=dict)  # endpoint, keys, ... for open_store
    backend: str = "auto"
    preload: tuple[str, ...] = ("production",)
    # Alias lookups are cached this long, so a promotion reaches serving within seconds, no redeploy.
    alias_ttl_s: float = 2.0
    backend_threads: int | None = None
    # Requests one preprocessor replica prepares at once. Scale preprocessing with replicas, not
    # threads: threads of one process contend for the GIL around the decoding, and on 2 cores four of
    # them cost 0.75 ms of CPU per frame where one costs 0.48 (bench/serving.py's CPU breakdown).
    preprocess_threads: int = 1
    max_frame_pixels: int = 40_000_000

    def open_store(self):
        return open_store(self.store_url, **self.store_options)


@dataclass
class LoadedModel:
    manifest: Manifest
    backend: Backend


def _cause(exc: BaseException) -> BaseException:
    # Errors raised in another replica arrive wrapped (RayTaskError); look at what was raised there.
    return getattr(exc, "cause", None) or exc


def _frames_in(items: list) -> int:
    return sum(len(item[1]) for item in items)


@serve.deployment(max_ongoing_requests=256, user_config=DEFAULT_BATCH, ray_actor_options={"num_cpus": 1})
class Classifier:
    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.registry = ModelRegistry(config.database_url)
        self.store = config.open_store()
        self.backend_name = default_backend() if config.backend == "auto" else config.backend
        self.models: dict[str, LoadedModel] = {}
        self._aliases: dict[str, tuple[str, float]] = {}
        self._load_lock = asyncio.Lock()
        self.max_batch_size = DEFAULT_BATCH["max_batch_size"]
        for ref in config.preload:
            try:
                self._load_sync(self.registry.resolve(ref).version)
            except ModelNotFound as exc:
                # Start anyway: requests for it get a clear 404 until a version is registered and promoted.
                log.warning("model not preloaded", ref=ref, reason=str(exc))

    def reconfigure(self, config: dict) -> None:
        """Batch size (frames per forward pass) and wait, tunable at runtime without a restart."""
        self.max_batch_size = int(config.get("max_batch_size", DEFAULT_BATCH["max_batch_size"]))
        self._batched.set_max_batch_size(self.max_batch_size)
        self._batched.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", DEFAULT_BATCH["batch_wait_timeout_s"])))

    def _load_sync(self, version: str) -> LoadedModel:
        if version in self.models:
            return self.models[version]
        row = self.registry.get(version)
        if row is None:
            raise ModelNotFound(f"no model version {version!r}")
        manifest, files = load_verified(self.store, row.manifest_key, row.manifest_sha256, required_files(self.backend_name))
        backend = make_backend(self.backend_name, manifest, files, threads=self.config.backend_threads)
        self.models[version] = LoadedModel(manifest, backend)
        log.info("model loaded", version=version, backend=backend.name, architecture=manifest.architecture)
        return self.models[version]

    async def _resolve(self, ref: str) -> str:
        cached = self._aliases.get(ref)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        version = (await asyncio.to_thread(self.registry.resolve, ref)).version
        self._aliases[ref] = (version, time.monotonic() + self.config.alias_ttl_s)
        return version

    async def describe(self, ref: str) -> dict:
        """Resolve an alias or version, load it if needed (sha256-verified), and say how to feed it."""
        version = await self._resolve(ref)
        if version not in self.models:
            async with self._load_lock:
                await asyncio.to_thread(self._load_sync, version)
        model = self.models[version]
        return {"version": version, "backend": model.backend.name, "processing": model.manifest.processing.to_dict()}

    async def loaded(self) -> list[dict]:
        return [{"version": v, "backend": m.backend.name, "architecture": m.manifest.architecture,
                 "classes": list(m.manifest.processing.classes), "input_size": m.manifest.processing.input_size}
                for v, m in self.models.items()]

    async def classify(self, version: str, pixels: np.ndarray) -> dict:
        """uint8 NHWC pixels of one request -> per-frame (label, confidence, probabilities)."""
        if version not in self.models:
            await self.describe(version)
        # One request may hold more frames than a batch: split it; the pieces batch with other requests.
        step = max(1, self.max_batch_size)
        parts = await asyncio.gather(*(self._batched((version, pixels[i : i + step])) for i in range(0, len(pixels), step)))
        decisions = [d for part in parts for d in part["decisions"]]
        return {"version": version, "backend": self.models[version].backend.name, "decisions": decisions,
                "infer_ms": round(sum(p["infer_ms"] for p in parts), 2),
                "batch_frames": max(p["batch_frames"] for p in parts)}

    @serve.batch(max_batch_size=DEFAULT_BATCH["max_batch_size"], batch_wait_timeout_s=DEFAULT_BATCH["batch_wait_timeout_s"],
                 batch_size_fn=_frames_in)
    async def _batched(self, items: list[tuple[str, np.ndarray]]) -> list[dict]:
        results: list[dict | None] = [None] * len(items)
        by_version: dict[str, list[int]] = defaultdict(list)
        for i, (version, _) in enumerate(items):
            by_version[version].append(i)
        for version, idxs in by_version.items():
            model = self.models[version]
            batch = np.concatenate([items[i][1] for i in idxs])
            started = time.perf_counter()
            # Off the event loop, so requests keep queueing into the next batch while this one runs.
            logits = await asyncio.to_thread(model.backend.predict, batch)
            infer_ms = (time.perf_counter() - started) * 1000
            decisions = model.manifest.processing.decide(logits)
            offset = 0
            for i in idxs:
                n = len(items[i][1])
                results[i] = {"decisions": decisions[offset : offset + n], "infer_ms": infer_ms, "batch_frames": len(batch)}
                offset += n
        return results


api = FastAPI(title="Sightline inference", version="1")


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content=ErrorBody(error=code, detail=detail, retryable=status >= 500).model_dump())


class StoreUnavailable(RuntimeError):
    pass


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class Preprocessor:
    def __init__(self, classifier: DeploymentHandle, config: ServingConfig) -> None:
        self.classifier = classifier
        self.config = config
        self.store = config.open_store()
        self.pool = ThreadPoolExecutor(max_workers=config.preprocess_threads, thread_name_prefix="preprocess")
        self.io_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fetch")
        self._described: dict[str, tuple[dict, float]] = {}

    async def _describe(self, ref: str) -> dict:
        cached = self._described.get(ref)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        info = await self.classifier.describe.remote(ref)
        self._described[ref] = (info, time.monotonic() + self.config.alias_ttl_s)
        return info

    def _fetch(self, object_key: str) -> bytes | str:
        """The frame's bytes, or the reason it cannot be had; raises StoreUnavailable if the store is down."""
        try:
            return self.store.get(object_key)
        except InvalidKeyError as exc:
            return f"invalid object key: {exc}"
        except ObjectNotFoundError:
            return f"frame not found in the object store: {object_key}"
        except Exception as exc:  # the store itself is down: the whole request is worth retrying
            raise StoreUnavailable(f"object store unavailable: {exc}") from exc

    def _prepare(self, object_keys: list[str], processing: Processing) -> tuple[list, np.ndarray | None, list[dict]]:
        """A request's frames -> per frame its timings or the rejection reason, the accepted frames'
        pixels as one uint8 NHWC batch (None when none is accepted) and their quality features. One
        call per request, not one per frame: on a few cores the per-frame hand-offs between threads
        cost more than the decoding."""
        t0 = time.perf_counter()
        if isinstance(self.store, LocalStore):
            blobs = [self._fetch(k) for k in object_keys]
        else:  # a network store: overlap the round trips
            blobs = list(self.io_pool.map(self._fetch, object_keys))
        fetch_ms = round((time.perf_counter() - t0) * 1000 / max(1, len(object_keys)), 2)
        prepared: list = []
        resized: list[np.ndarray] = []
        for data in blobs:
            if isinstance(data, str):
                prepared.append(data)
                continue
            t1 = time.perf_counter()
            try:
                frame = decode_frame(data, self.config.max_frame_pixels)
            except FrameRejected as exc:
                prepared.append(str(exc))
                continue
            resized.append(processing.resize(frame.pixels))
            prepared.append({"fetch_ms": fetch_ms, "preprocess_ms": round((time.perf_counter() - t1) * 1000, 2)})
        if not resized:
            return prepared, None, []
        pixels = np.stack(resized)
        return prepared, pixels, quality_features_batch(pixels)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self) -> list[dict]:
        return await self.classifier.loaded.remote()

    @api.post("/v1/classify", response_model=None, responses={
        200: {"model": ClassifyResponse}, 404: {"model": ErrorBody}, 422: {"description": "invalid request"},
        500: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def classify(self, request: ClassifyRequest):
        started = time.perf_counter()
        try:
            info = await self._describe(request.model)
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, ModelNotFound):
                return _error(404, "model_not_found", str(cause))
            if isinstance(cause, IntegrityError):
                return _error(500, "model_integrity", str(cause))
            if isinstance(cause, BackendUnavailable):
                return _error(500, "backend_unavailable", str(cause))
            log.exception("describe failed", model=request.model)
            return _error(503, "classifier_unavailable", f"{type(cause).__name__}: {cause}")
        processing = Processing.from_dict(info["processing"])

        loop = asyncio.get_running_loop()
        try:
            prepared, pixels, qualities = await loop.run_in_executor(
                self.pool, self._prepare, [f.object_key for f in request.frames], processing)
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", str(exc))
        t_pre = time.perf_counter()

        rejections, accepted = [], []
        for frame, result in zip(request.frames, prepared):
            if isinstance(result, str):
                rejections.append({"frame_id": frame.frame_id, "reason": result})
            else:
                accepted.append((frame, result))
        predictions: list[dict] = []
        infer_ms, batch_frames = 0.0, 0
        if pixels is not None:
            try:
                out = await self.classifier.classify.remote(info["version"], pixels)
            except Exception as exc:
                log.exception("classify failed", version=info["version"])
                return _error(503, "classifier_unavailable", f"{type(_cause(exc)).__name__}: {_cause(exc)}")
            infer_ms, batch_frames = out["infer_ms"], out["batch_frames"]
            for (frame, timings), quality, (label, confidence, probs) in zip(accepted, qualities, out["decisions"]):
                predictions.append({"frame_id": frame.frame_id, "label": label, "confidence": confidence,
                                    "probabilities": probs, "quality": quality,
                                    "timings": {**timings, "infer_ms": round(infer_ms, 2)}})
        # Plain dicts in the ClassifyResponse shape (the client validates them): building and then
        # re-validating pydantic models for every frame cost more CPU here than the model's forward pass.
        return JSONResponse({
            "model_version": info["version"],
            "backend": info["backend"],
            "predictions": predictions,
            "rejections": rejections,
            "timings": {"preprocess_ms": round((t_pre - started) * 1000, 2), "infer_ms": round(infer_ms, 2),
                        "batch_frames": batch_frames, "total_ms": round((time.perf_counter() - started) * 1000, 2)},
        })


def _needs_gpu(backend: str) -> bool:
    return backend in ("torch-cuda", "tensorrt") or (backend == "auto" and default_backend() == "torch-cuda")


def build_app(config: ServingConfig, *, preprocessor_replicas: int = 1, classifier_replicas: int = 1,
              batch: dict | None = None, classifier_cpus: float = 1, preprocessor_cpus: float = 0.5,
              classifier_gpus: float | None = None):
    # Ray hides GPUs from actors that did not ask for one, so a CUDA backend must claim it.
    gpus = classifier_gpus if classifier_gpus is not None else (1 if _needs_gpu(config.backend) else 0)
    classifier = Classifier.options(
        num_replicas=classifier_replicas, user_config={**DEFAULT_BATCH, **(batch or {})},
        ray_actor_options={"num_cpus": classifier_cpus, "num_gpus": gpus},
    ).bind(config)
    return Preprocessor.options(num_replicas=preprocessor_replicas, ray_actor_options={"num_cpus": preprocessor_cpus}).bind(
        classifier, config)
