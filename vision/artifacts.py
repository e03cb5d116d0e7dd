"""A model version as an artifact set in the object store: weights, ONNX export, novelty statistics,
the drift reference, the model card, a manifest, and the manifest's Ed25519 signature.

The manifest lists the sha256 of every file, and the registry keeps the sha256 of the manifest, so a
loader that starts from the registry row can prove every byte it loads is the byte that was trained;
the signature (vision.signatures) proves a trusted trainer made that manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from infra.store import ObjectNotFoundError, ObjectStore, sha256_hex
from vision.processing import Processing
from vision.signatures import ModelSigner, SignatureError, verify

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
WEIGHTS = "weights.pt"
ONNX = "model.onnx"
NOVELTY = "novelty.npz"  # the novelty head's statistics (the ONNX graph carries them too)
REFERENCE = "reference.json"  # held-out frames' quality, predictions and novelty: the drift reference
CARD = "model_card.json"


class IntegrityError(RuntimeError):
    """A file's bytes do not match the sha256 the manifest (or registry) recorded: refuse to load it."""


def version_prefix(version: str) -> str:
    return f"models/{version}"


@dataclass
class Manifest:
    version: str
    architecture: str
    processing: Processing
    files: dict[str, dict]  # name -> {"key", "sha256", "size"}
    metrics: dict = field(default_factory=dict)
    parent_version: str | None = None
    dataset_snapshot_id: str | None = None
    training: dict = field(default_factory=dict)
    created_at: str = ""
    novelty: dict = field(default_factory=dict)  # vision.novelty.NoveltyModel.summary(); {} uncalibrated
    # What the version answers: "classification" (a label per frame) or "detection" (boxes per frame,
    # vision.detector). Written only for detection, so a classifier's manifest keeps its bytes.
    task: str = "classification"

    def to_json(self) -> bytes:
        return json.dumps({
            "format": 1,
            "version": self.version,
            "architecture": self.architecture,
            "classes": list(self.processing.classes),
            "input_size": self.processing.input_size,
            "normalization": {"mean": list(self.processing.mean), "std": list(self.processing.std)},
            "files": self.files,
            "metrics": self.metrics,
            "parent_version": self.parent_version,
            "dataset_snapshot_id": self.dataset_snapshot_id,
            "training": self.training,
            "created_at": self.created_at,
            "novelty": self.novelty,
            **({"task": self.task} if self.task != "classification" else {}),
        }, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        d = json.loads(data)
        processing = Processing(classes=tuple(d["classes"]), input_size=int(d["input_size"]),
                                mean=tuple(d["normalization"]["mean"]), std=tuple(d["normalization"]["std"]))
        return cls(d["version"], d["architecture"], processing, d["files"], d.get("metrics", {}),
                   d.get("parent_version"), d.get("dataset_snapshot_id"), d.get("training", {}),
                   d.get("created_at", ""), d.get("novelty", {}), d.get("task", "classification"))


def publish(store: ObjectStore, version: str, architecture: str, processing: Processing, files: dict[str, bytes],
            metrics: dict, parent_version: str | None, dataset_snapshot_id: str | None,
            training: dict | None = None, *, signer: ModelSigner, novelty: dict | None = None,
            task: str = "classification") -> tuple[Manifest, str, str]:
    """Write the files, then the manifest, then its signature (a reader never finds a manifest whose
    files are missing, and the registry row that makes a version loadable comes after all three).
    Returns (manifest, manifest key, manifest sha256)."""
    prefix = version_prefix(version)
    entries = {}
    for name, data in files.items():
        key = f"{prefix}/{name}"
        store.put(key, data)
        entries[name] = {"key": key, "sha256": sha256_hex(data), "size": len(data)}
    manifest = Manifest(version, architecture, processing, entries, metrics, parent_version, dataset_snapshot_id,
                        training or {}, datetime.now(UTC).isoformat(timespec="seconds"), novelty or {}, task)
    body = manifest.to_json()
    key = f"{prefix}/{MANIFEST}"
    store.put(key, body, "application/json")
    store.put(f"{prefix}/{SIGNATURE}", signer.sign(body), "application/json")
    return manifest, key, sha256_hex(body)


def _verified(store: ObjectStore, key: str, expected_sha256: str, what: str) -> bytes:
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        raise IntegrityError(f"{what} is missing from the object store: {key}") from None
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise IntegrityError(f"{what} at {key} has sha256 {actual}, expected {expected_sha256}: refusing to load it")
    return data


def signature_key(manifest_key: str) -> str:
    return manifest_key.rsplit("/", 1)[0] + "/" + SIGNATURE


def sign_existing(store: ObjectStore, manifest_key: str, manifest_sha256: str, signer: ModelSigner) -> str:
    """Sign a version published before manifests were signed (its manifest still checked against the
    registry's sha256 first); returns the signing key's id."""
    body = _verified(store, manifest_key, manifest_sha256, "manifest")
    store.put(signature_key(manifest_key), signer.sign(body), "application/json")
    return signer.key_id


def verify_signature(store: ObjectStore, manifest_key: str, body: bytes, trusted_keys: Iterable[str]) -> str:
    """The id of the trusted key that signed these manifest bytes; IntegrityError otherwise."""
    try:
        document: bytes | None = store.get(signature_key(manifest_key))
    except ObjectNotFoundError:
        document = None
    try:
        return verify(body, document, trusted_keys)
    except SignatureError as exc:
        raise IntegrityError(f"{manifest_key}: {exc}") from None


def load_verified(store: ObjectStore, manifest_key: str, manifest_sha256: str,
                  names: tuple[str, ...] = (ONNX,), *, optional: tuple[str, ...] = (),
                  trusted_keys: Iterable[str] | None = None) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the named files, each checked against its recorded sha256; `optional` files
    are loaded (and checked) when the manifest lists them. With `trusted_keys` (what serving always
    passes) the manifest must also carry a valid signature by one of them."""
    body = _verified(store, manifest_key, manifest_sha256, "manifest")
    if trusted_keys is not None:
        verify_signature(store, manifest_key, body, trusted_keys)
    manifest = Manifest.from_json(body)
    files = {}
    for name in (*names, *(n for n in optional if n in manifest.files)):
        entry = manifest.files.get(name)
        if entry is None:
            raise IntegrityError(f"manifest of {manifest.version} lists no {name}")
        files[name] = _verified(store, entry["key"], entry["sha256"], f"{name} of {manifest.version}")
    return manifest, files
