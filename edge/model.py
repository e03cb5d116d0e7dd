"""The local model: the production ONNX export pulled from the registry through the API, checked like
serving checks it, and run with onnxruntime beside the cameras.

A version is taken only when every check passes: the manifest's bytes have the sha256 the registry
recorded (the API's ETag), the manifest carries an Ed25519 signature by a trusted key (the keys serving
trusts), and the ONNX file has the sha256 and size the signed manifest lists; then it must load and
answer a test frame. Anything else is refused, the reason recorded and counted, and the agent keeps the
last good version. The last good version is kept on disk, checked again at start, so the agent decides
from its first frame even while the network is down.

The agent follows a ref (an alias, normally `production`): polling it costs a 304 while the alias
stays, and when a rollout promotes or rolls back, the next poll brings the new version. The export
normalises in its own graph and answers novelty beside the logits (vision.model), so decisions here
are serving's: the same decode, resize and post-processing (vision.decode, vision.processing).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import structlog

from edge.central_api import CentralApi
from edge.metrics import EdgeMetrics
from edge.pacing import pause
from edge.settings import EdgeSettings
from infra.settings import Settings
from infra.store import sha256_hex
from vision.artifacts import MANIFEST, ONNX, SIGNATURE, Manifest
from vision.decode import DEFAULT_MAX_PIXELS, decode_frame
from vision.processing import Decision
from vision.signatures import KEY_FILE, SignatureError, trusted_keys_from_settings, verify

log = structlog.get_logger(__name__)
CURRENT = "current.json"
# A refused version is not downloaded again on every poll; it is tried again after this long (its
# files may have been put right in the store).
REFUSED_RETRY_S = 300.0


class ModelRefused(ValueError):
    """A version that failed a check; the message says which."""


def trusted_keys(settings: EdgeSettings) -> tuple[str, ...]:
    """The edge's own list, else the keys serving trusts: SIGHTLINE_MODEL_TRUSTED_KEYS and, where the
    stack's signing key is configured or in its data dir (the stack's own host), its public key. None
    configured anywhere: nothing is trusted, and every version is refused."""
    if settings.trusted_keys:
        return tuple(settings.trusted_keys)
    main = Settings()
    if main.model_signing_key or (main.resolved_data_dir / KEY_FILE).exists():
        return trusted_keys_from_settings(main)
    return tuple(k for k in main.model_trusted_keys if k)


@dataclass(frozen=True)
class ModelFiles:
    manifest: bytes
    signature: bytes
    onnx: bytes


class LocalModel:
    """A verified version, loaded: `decide(frame bytes)` is serving's answer for the frame."""

    def __init__(self, files: ModelFiles, trusted: Iterable[str], expected_manifest_sha256: str | None = None,
                 threads: int = 1) -> None:
        self.manifest_sha256 = sha256_hex(files.manifest)
        if expected_manifest_sha256 and self.manifest_sha256 != expected_manifest_sha256:
            raise ModelRefused(f"the manifest has sha256 {self.manifest_sha256}, but the registry recorded "
                               f"{expected_manifest_sha256}")
        try:
            self.key_id = verify(files.manifest, files.signature, trusted)
        except SignatureError as exc:
            raise ModelRefused(str(exc)) from None
        try:
            self.manifest = Manifest.from_json(files.manifest)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelRefused(f"the manifest does not parse: {exc}") from None
        self.version = self.manifest.version
        entry = self.manifest.files.get(ONNX)
        if entry is None:
            raise ModelRefused(f"the manifest of {self.version} lists no {ONNX}")
        actual = sha256_hex(files.onnx)
        if actual != entry["sha256"] or len(files.onnx) != entry.get("size", len(files.onnx)):
            raise ModelRefused(f"{ONNX} of {self.version} has sha256 {actual} ({len(files.onnx)} bytes); the signed "
                               f"manifest lists {entry['sha256']} ({entry.get('size')} bytes)")
        self.files = files
        self.processing = self.manifest.processing
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No spinning between frames: the cores belong to the capture and upload work too.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(files.onnx, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a graph it cannot load
            raise ModelRefused(f"{ONNX} of {self.version} does not load: {exc}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        # Exports made before normalisation moved into the graph take float32 NCHW (as in serving).
        self.legacy = model_input.type == "tensor(float)"
        self.has_novelty = len(self.session.get_outputs()) > 1
        size = self.processing.input_size
        try:
            logits = self.scores(np.zeros((1, size, size, 3), np.uint8))[0]
        except Exception as exc:
            raise ModelRefused(f"{self.version} does not answer a test frame: {exc}") from None
        if logits.shape != (1, len(self.processing.classes)):
            raise ModelRefused(f"{self.version} answers {logits.shape[1:]} scores for {len(self.processing.classes)} "
                               "classes")

    def scores(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = self.processing.normalize(pixels) if self.legacy else np.ascontiguousarray(pixels, dtype=np.uint8)
        outputs = self.session.run(None, {self.input_name: batch})
        return outputs[0], outputs[1] if self.has_novelty else None

    def decide(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decision:
        """The decision for one frame's bytes; FrameRejected (vision.decode) when they are not a frame."""
        pixels = self.processing.resize(decode_frame(data, max_pixels).pixels)[None]
        logits, novelty = self.scores(pixels)
        return self.processing.decide(logits, novelty)[0]


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ModelKeeper:
    """Holds the current model, follows the ref, and keeps the last good version on disk."""

    def __init__(self, api: CentralApi, settings: EdgeSettings, metrics: EdgeMetrics) -> None:
        self.api, self.settings, self.metrics = api, settings, metrics
        self.ref = settings.model_ref
        self.root = settings.resolved_data_dir / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self.trusted = trusted_keys(settings)
        self.current: LocalModel | None = None
        self.since: float | None = None
        self.refusal: str | None = None  # the last version refused, and why
        self.refused_at: float | None = None
        self._refused: dict[str, float] = {}  # manifest sha256 -> when it may be tried again
        self.last_checked: float | None = None
        self.last_error: str | None = None

    def load_last_good(self) -> LocalModel | None:
        """The version kept on disk, checked again (its files, and the signature against today's keys)."""
        pointer = self.root / CURRENT
        if not pointer.exists():
            return None
        try:
            version = json.loads(pointer.read_text())["version"]
            folder = self.root / version
            files = ModelFiles((folder / MANIFEST).read_bytes(), (folder / SIGNATURE).read_bytes(),
                               (folder / ONNX).read_bytes())
            model = LocalModel(files, self.trusted, threads=self.settings.model_threads)
        except (OSError, ValueError, KeyError) as exc:
            self._refuse("the version kept on disk", f"{exc}")
            return None
        self._use(model)
        log.info("edge model loaded from disk", version=model.version)
        return model

    def _use(self, model: LocalModel) -> None:
        self.current, self.since = model, time.time()
        self.metrics.set_model(model.version)

    def _refuse(self, what: str, reason: str) -> None:
        self.refusal = f"{what} was refused: {reason}"
        self.refused_at = time.time()
        self.metrics.model_refusals.inc()
        log.warning("edge model refused", what=what, reason=reason,
                    keeps=self.current.version if self.current else None)

    def _keep(self, model: LocalModel) -> None:
        """Write the version's files, then point `current` at it (a crash in between keeps the old one)."""
        folder = self.root / model.version
        folder.mkdir(exist_ok=True)
        for name, data in ((MANIFEST, model.files.manifest), (SIGNATURE, model.files.signature),
                           (ONNX, model.files.onnx)):
            _write_durably(folder / name, data)
        _write_durably(self.root / CURRENT, json.dumps({"version": model.version,
                                                        "manifest_sha256": model.manifest_sha256}).encode())
        previous = self.current.version if self.current else None
        for other in self.root.iterdir():
            if other.is_dir() and other.name not in (model.version, previous):
                shutil.rmtree(other, ignore_errors=True)

    def install(self, model: LocalModel) -> None:
        """Keep a verified version and decide with it from now on: a box provisioned before it first
        reaches the API (the benchmark, a model carried to a site). The ref still moves it on."""
        self._keep(model)
        self._use(model)

    async def refresh(self) -> bool:
        """Ask for the ref's manifest; when it names another version, check it, load it and switch to
        it. True when the model changed. A refusal keeps the current model."""
        if not self.ref:
            return False
        current = self.current
        manifest = await self.api.artifact(self.ref, MANIFEST, current.manifest_sha256 if current else None)
        self.last_checked, self.last_error = time.time(), None
        if manifest is None or (current is not None and manifest.sha256 == current.manifest_sha256):
            return False
        if self._refused.get(manifest.sha256, 0.0) > time.monotonic():
            return False
        what = f"version {manifest.version or '?'}"
        try:
            model = await self._fetch_and_check(manifest.version, manifest.data, manifest.sha256)
        except ModelRefused as exc:
            self._refused[manifest.sha256] = time.monotonic() + REFUSED_RETRY_S
            self._refuse(what, str(exc))
            return False
        await asyncio.to_thread(self._keep, model)
        self._use(model)
        self.refusal = None
        log.info("edge model updated", version=model.version, previous=current.version if current else None)
        return True

    async def _fetch_and_check(self, version: str, manifest: bytes, registry_sha256: str) -> LocalModel:
        if not version:
            raise ModelRefused("the API named no version for the manifest")
        if sha256_hex(manifest) != registry_sha256:
            raise ModelRefused(f"the manifest has sha256 {sha256_hex(manifest)}, but the registry recorded "
                               f"{registry_sha256}")
        signature = await self._file(version, SIGNATURE)
        # Check the signature before downloading the model: an untrusted version costs one small file.
        try:
            verify(manifest, signature, self.trusted)
        except SignatureError as exc:
            raise ModelRefused(str(exc)) from None
        if Manifest.from_json(manifest).version != version:
            raise ModelRefused(f"the manifest served for {version} names another version")
        onnx = await self._file(version, ONNX)
        if onnx is None:
            raise ModelRefused(f"{version} has no {ONNX} in the store")
        assert signature is not None
        files = ModelFiles(manifest, signature, onnx)
        return await asyncio.to_thread(LocalModel, files, self.trusted, registry_sha256, self.settings.model_threads)

    async def _file(self, version: str, name: str) -> bytes | None:
        """A file of the version; None when the API has none (an unsigned version, a missing file)."""
        try:
            artifact = await self.api.artifact(version, name)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise
        assert artifact is not None  # no ETag was sent: never a 304
        return artifact.data

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except httpx.HTTPStatusError as exc:
                code, text = exc.response.status_code, exc.response.text[:200]
                self.last_error = f"the API answered {code} for the model: {text}"
            except httpx.TransportError as exc:
                self.last_error = f"no answer from the API for the model: {exc!r}"
            except Exception as exc:  # whatever it was, the current model stays and the next poll tries again
                log.exception("model refresh failed")
                self.last_error = f"the model refresh failed: {exc!r}"
            await pause(stop, self.settings.model_poll_interval_s)
