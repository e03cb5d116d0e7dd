"""The preprocessing deployment and HTTP ingress: fetches each frame from the object store, decodes and
validates it (vision.decode), resizes it and computes its quality features, then classifies it.
Frames it cannot use come back as per-frame rejections, never as a failed batch.

Two layouts (serving.app): in the pair, the preprocessor asks the classifier deployment through its
handle, which batches frames across requests into shared passes (the layout for a GPU classifier); in
the fused layout, each replica holds the models itself (serving.models) and classifies a request's
frames in the same process, with no hop between replicas: on CPU hosts that hop (the pixels pickled from
one replica to the other, and the classifier's own event loop) cost more than cross-request batching
gains, because onnxruntime spends no less per frame on one long pass than on a request's own chunks."""

# No `from __future__ import annotations` here: FastAPI must see real types on the ingress methods
# (string annotations on a Serve ingress class are not resolved, and the body would become a query).
import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from ray import serve
from ray.serve.handle import DeploymentHandle

from infra.log import get_logger
from infra.store import InvalidKeyError, LocalStore, ObjectNotFoundError
from infra.telemetry import configure_tracing, context_from, tracer
from serving.backends.base import BackendUnavailable
from serving.config import ServingConfig
from serving.messages import Classification, ResolvedModel
from serving.metrics import ReplicaMetrics
from serving.models import ModelSet
from serving.schema import ClassifyRequest, ClassifyResponse, ErrorBody, FrameKey
from vision.artifacts import IntegrityError
from vision.decode import FrameRejected, decode_frame
from vision.processing import Decision, Processing
from vision.quality import quality_features_batch
from vision.registry import ModelNotFound, ModelRegistry
from vision.traffic import TrafficSplit

log = get_logger(__name__)
_tracer = tracer(__name__)

api = FastAPI(title="Sightline inference", version="1")


class StoreUnavailable(RuntimeError):
    pass


@dataclass
class Decoded:
    """What decoding an accepted frame found, reported with its prediction (and recorded with it)."""

    sha256: str
    width: int
    height: int
    image_format: str
    timings: dict[str, float]


@dataclass
class Refused:
    reason: str
    sha256: str = ""  # empty when the bytes could not be fetched


@dataclass
class PreparedFrames:
    """A request's frames after fetching and decoding."""

    outcomes: list[Decoded | Refused]  # per frame, in order
    pixels: np.ndarray | None  # the accepted frames as one uint8 NHWC batch; None when none was accepted
    qualities: list[dict[str, float]]  # per accepted frame
    fetch_ns: tuple[int, int] = (0, 0)  # when fetching the request's frames began and ended (a span of its own)


@dataclass
class SplitAnswer:
    """A request's frames answered under a traffic split, by position among the accepted frames."""

    decisions: dict[int, tuple[str, Decision]] = field(default_factory=dict)  # position -> (version, decision)
    answers: dict[str, Classification] = field(default_factory=dict)  # version -> its answer (timings)
    shadow: list[tuple[int, Decision]] = field(default_factory=list)
    shadow_infer_ms: float = 0.0
    failures: list[tuple[int, str, bool, str]] = field(default_factory=list)  # position, version, shadow, error


# Requests for this alias follow the traffic split; a request naming a version or another alias does not.
LIVE_ALIAS = "production"


def _cause(exc: BaseException) -> BaseException:
    # Errors raised in another replica arrive wrapped (RayTaskError); look at what was raised there.
    return getattr(exc, "cause", None) or exc


# An answer in the HTTP body's shape, with its status: what POST /v1/classify sends as JSON, and what
# `classify_keys` hands a caller holding the application's handle as it is.
Reply = tuple[int, dict[str, Any]]


def _error(status: int, code: str, detail: str) -> Reply:
    return status, ErrorBody(error=code, detail=detail, retryable=status >= 500).model_dump()


def _describe_failed(ref: str, exc: Exception) -> Reply:
    cause = _cause(exc)
    if isinstance(cause, ModelNotFound):
        return _error(404, "model_not_found", str(cause))
    if isinstance(cause, IntegrityError):
        return _error(500, "model_integrity", str(cause))
    if isinstance(cause, BackendUnavailable):
        return _error(500, "backend_unavailable", str(cause))
    log.exception("describe failed", model=ref)
    return _error(503, "classifier_unavailable", f"{type(cause).__name__}: {cause}")


@serve.deployment(max_ongoing_requests=128)
@serve.ingress(api)
class Preprocessor:
    def __init__(self, classifier: DeploymentHandle | None, config: ServingConfig) -> None:
        # This replica's spans join the caller's trace (the context comes with each request).
        configure_tracing(config.tracing, "serving")
        self.metrics = ReplicaMetrics()
        # No classifier handle: the fused layout, this replica holds the models (single-threaded
        # onnxruntime unless told otherwise: one replica per core uses the cores best).
        self.classifier = classifier
        self.local_models: ModelSet | None = None
        if classifier is None:
            self.local_models = ModelSet(config, config.backend, config.backend_threads or 1)
            self.local_models.preload()
        self.config = config
        self.store = config.open_store()
        self.pool = ThreadPoolExecutor(max_workers=config.preprocess_threads, thread_name_prefix="preprocess")
        self.io_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fetch")
        self._described: dict[str, tuple[ResolvedModel, float]] = {}
        self.registry = ModelRegistry(config.database_url)
        self._split_cache: tuple[TrafficSplit, float] = (TrafficSplit(), 0.0)

    async def _describe(self, ref: str) -> ResolvedModel:
        cached = self._described.get(ref)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        if self.local_models is not None:
            resolved = await asyncio.to_thread(self.local_models.describe, ref)
        else:
            assert self.classifier is not None
            resolved = await self.classifier.describe.remote(ref)
        self._described[ref] = (resolved, time.monotonic() + self.config.alias_ttl_s)
        return resolved

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

    def _prepare(self, object_keys: list[str], processing: Processing) -> PreparedFrames:
        """One call per request, not one per frame: on a few cores the per-frame hand-offs between
        threads cost more than the decoding."""
        t0, fetch_began = time.perf_counter(), time.time_ns()
        if isinstance(self.store, LocalStore):
            blobs = [self._fetch(k) for k in object_keys]
        else:  # a network store: overlap the round trips
            blobs = list(self.io_pool.map(self._fetch, object_keys))
        fetched = (fetch_began, time.time_ns())
        fetch_ms = round((time.perf_counter() - t0) * 1000 / max(1, len(object_keys)), 2)
        outcomes: list[Decoded | Refused] = []
        resized: list[np.ndarray] = []
        for data in blobs:
            if isinstance(data, str):
                outcomes.append(Refused(data))
                continue
            t1 = time.perf_counter()
            digest = hashlib.sha256(data).hexdigest()
            try:
                # Decoded no larger than the model needs (vision.decode: DCT scaling of large JPEGs).
                frame = decode_frame(data, self.config.max_frame_pixels, min_side=processing.input_size)
            except FrameRejected as exc:
                outcomes.append(Refused(str(exc), digest))
                continue
            resized.append(processing.resize(frame.pixels))
            preprocess_ms = round((time.perf_counter() - t1) * 1000, 2)
            outcomes.append(Decoded(digest, frame.width, frame.height, frame.format,
                                    {"fetch_ms": fetch_ms, "preprocess_ms": preprocess_ms}))
        if not resized:
            return PreparedFrames(outcomes, None, [], fetched)
        pixels = np.stack(resized)
        return PreparedFrames(outcomes, pixels, quality_features_batch(pixels), fetched)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self) -> list[dict[str, Any]]:
        if self.local_models is not None:
            return [asdict(model) for model in self.local_models.loaded()]
        assert self.classifier is not None
        return [asdict(model) for model in await self.classifier.loaded.remote()]

    @api.post("/v1/classify", response_model=None, responses={
        200: {"model": ClassifyResponse}, 404: {"model": ErrorBody}, 422: {"description": "invalid request"},
        500: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def classify(self, request: ClassifyRequest, http: Request) -> JSONResponse:
        status, body = await self._traced_answer(request, http.headers)
        return JSONResponse(body, status_code=status)

    async def classify_keys(self, request: ClassifyRequest, trace_context: dict[str, str] | None = None) -> Reply:
        """POST /v1/classify for callers inside the Ray cluster holding the application's handle (the
        inference workers): no HTTP proxy, no JSON; Ray pickles the same reply."""
        return await self._traced_answer(request, trace_context)

    async def _traced_answer(self, request: ClassifyRequest, carrier: Any) -> Reply:
        with _tracer.start_as_current_span("serving.preprocessor", context=context_from(carrier),
                                           kind=SpanKind.SERVER, attributes={"sightline.frames": len(request.frames),
                                                                             "sightline.model": request.model}) as span:
            status, body = await self._answer(request)
            span.set_attribute("http.response.status_code", status)
        if status == 200:
            self.metrics.observe(body)
        return status, body

    async def _answer(self, request: ClassifyRequest) -> Reply:
        started = time.perf_counter()
        try:
            model = await self._describe(request.model)
        except Exception as exc:
            return _describe_failed(request.model, exc)

        loop = asyncio.get_running_loop()
        try:
            with _tracer.start_as_current_span("preprocess"):
                prepared = await loop.run_in_executor(
                    self.pool, self._prepare, [f.object_key for f in request.frames], model.processing)
                if prepared.fetch_ns[1]:  # measured in the thread; recorded here, under `preprocess`
                    _tracer.start_span("store.fetch", start_time=prepared.fetch_ns[0]).end(prepared.fetch_ns[1])
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", str(exc))
        t_pre = time.perf_counter()

        rejections: list[dict[str, Any]] = []
        accepted: list[tuple[FrameKey, Decoded]] = []
        for frame, outcome in zip(request.frames, prepared.outcomes, strict=True):
            if isinstance(outcome, Refused):
                rejections.append({"frame_id": frame.frame_id, "reason": outcome.reason, "sha256": outcome.sha256})
            else:
                accepted.append((frame, outcome))
        predictions: list[dict[str, Any]] = []
        shadow_predictions: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        infer_ms, batch_frames = 0.0, 0
        if prepared.pixels is not None:
            split = await self._split() if request.model == LIVE_ALIAS else TrafficSplit()
            try:
                with _tracer.start_as_current_span("model.classify", attributes={"sightline.model": model.version,
                                                                                "sightline.frames": len(accepted)}):
                    routed = await self._classify_split(split, model, [f.frame_id for f, _ in accepted],
                                                        prepared.pixels)
            except Exception as exc:
                log.exception("classify failed", version=model.version)
                return _error(503, "classifier_unavailable", f"{type(_cause(exc)).__name__}: {_cause(exc)}")
            infer_ms = max((a.infer_ms for a in routed.answers.values()), default=0.0)
            batch_frames = max((a.batch_frames for a in routed.answers.values()), default=0)
            for i, ((frame, decoded), quality) in enumerate(zip(accepted, prepared.qualities, strict=True)):
                version, decision = routed.decisions[i]
                timings = {**decoded.timings, "infer_ms": round(routed.answers[version].infer_ms, 2)}
                predictions.append({"frame_id": frame.frame_id, "label": decision.label,
                                    "confidence": decision.confidence, "probabilities": decision.probabilities,
                                    "novelty": decision.novelty, "unfamiliar": decision.unfamiliar,
                                    "quality": quality, "timings": timings,
                                    "sha256": decoded.sha256, "width": decoded.width, "height": decoded.height,
                                    "image_format": decoded.image_format, "model_version": version,
                                    # Only a detection version's: a classifier's reply keeps its shape.
                                    **({"boxes": decision.boxes} if decision.boxes is not None else {})})
            for i, decision in routed.shadow:
                shadow_predictions.append({"frame_id": accepted[i][0].frame_id, "model_version": split.shadow_version,
                                           "label": decision.label, "confidence": decision.confidence,
                                           "novelty": decision.novelty, "unfamiliar": decision.unfamiliar,
                                           "infer_ms": round(routed.shadow_infer_ms, 2),
                                           **({"boxes": decision.boxes} if decision.boxes is not None else {})})
            failures = [{"frame_id": accepted[i][0].frame_id, "model_version": version, "shadow": shadow,
                         "error": error} for i, version, shadow, error in routed.failures]
        # Plain dicts in the ClassifyResponse shape (the client validates them): building and then
        # re-validating pydantic models for every frame cost more CPU here than the model's forward pass.
        return 200, {
            "model_version": model.version,
            "backend": model.backend,
            "predictions": predictions,
            "rejections": rejections,
            "timings": {"preprocess_ms": round((t_pre - started) * 1000, 2), "infer_ms": round(infer_ms, 2),
                        "batch_frames": batch_frames, "total_ms": round((time.perf_counter() - started) * 1000, 2)},
            "shadow_predictions": shadow_predictions,
            "version_failures": failures,
        }

    async def _split(self) -> TrafficSplit:
        """The live traffic split (vision.traffic), re-read every alias_ttl_s. Every version it names is
        loaded before it gets a frame; a split naming one that cannot be loaded (or a registry that
        cannot be read) leaves the previous split in place, so changing the split never fails a request."""
        cached = self._split_cache
        if cached[1] > time.monotonic():
            return cached[0]
        try:
            split = await asyncio.to_thread(self.registry.traffic)
            for version in split.versions:
                await self._describe(version)
        except Exception as exc:
            log.warning("traffic split not applied; keeping the previous one", error=str(_cause(exc)))
            split = cached[0]
        self._split_cache = (split, time.monotonic() + self.config.alias_ttl_s)
        return split

    async def _classify_as(self, version: str, primary: ResolvedModel, pixels: np.ndarray) -> Classification:
        if version != primary.version:
            resolved = await self._describe(version)
            if resolved.processing.input_size != primary.processing.input_size:
                # Frames were resized once, for production; a version of another size gets them resized again.
                pixels = np.stack([resolved.processing.resize(p) for p in pixels])
        if self.local_models is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self.local_models.classify, version, pixels,
                                              self.config.infer_chunk)
        assert self.classifier is not None
        answer: Classification = await self.classifier.classify.remote(version, pixels)
        return answer

    async def _classify_split(self, split: TrafficSplit, primary: ResolvedModel, frame_ids: list[str],
                              pixels: np.ndarray) -> SplitAnswer:
        """Each frame by the version the split gives it (production's failure fails the request; another
        version's falls back to production for its frames, recorded as failures), and the shadow share
        by the shadow version too (its failure is recorded, nothing else)."""
        groups: dict[str, list[int]] = {}
        for i, frame_id in enumerate(frame_ids):
            groups.setdefault(split.version_for(frame_id, primary.version), []).append(i)
        shadowed = [i for i, frame_id in enumerate(frame_ids) if split.shadows(frame_id)]
        calls = [self._classify_as(v, primary, pixels[idxs]) for v, idxs in groups.items()]
        if shadowed and split.shadow_version:
            calls.append(self._classify_as(split.shadow_version, primary, pixels[shadowed]))
        results = await asyncio.gather(*calls, return_exceptions=True)
        out = SplitAnswer()
        fallback: list[int] = []
        for (version, idxs), result in zip(groups.items(), results, strict=False):
            if isinstance(result, BaseException):
                if version == primary.version:
                    raise result
                log.warning("version failed; production answers its frames", version=version, error=str(result))
                out.failures += [(i, version, False, f"{type(_cause(result)).__name__}: {_cause(result)}")
                                 for i in idxs]
                fallback += idxs
                continue
            out.answers[version] = result
            out.decisions.update({i: (version, d) for i, d in zip(idxs, result.decisions, strict=True)})
        if fallback:
            answer = await self._classify_as(primary.version, primary, pixels[fallback])
            out.answers.setdefault(primary.version, answer)
            out.decisions.update({i: (primary.version, d) for i, d in zip(fallback, answer.decisions, strict=True)})
        if shadowed and split.shadow_version:
            shadow = results[-1]
            if isinstance(shadow, BaseException):
                out.failures += [(i, split.shadow_version, True, f"{type(_cause(shadow)).__name__}: {_cause(shadow)}")
                                 for i in shadowed]
            else:
                out.shadow = list(zip(shadowed, shadow.decisions, strict=True))
                out.shadow_infer_ms = shadow.infer_ms
        return out
