"""Ed25519 signatures over a model version's manifest, and the keys that make and check them.

The manifest lists the sha256 of every artifact file, so one signature over the manifest's bytes
covers every byte serving loads. The signature travels next to the manifest as `manifest.sig`, a small
JSON document naming the key that made it (the first 16 hex of the sha256 of its raw public key).

The signing key is SIGHTLINE_MODEL_SIGNING_KEY (a PEM private key, or the 32-byte raw key in base64),
or one generated once into the data dir, so every process of a local stack (trainer, serving) shares
it. Serving trusts its public key and any listed in SIGHTLINE_MODEL_TRUSTED_KEYS (raw public keys in
base64): production can verify with public keys alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from infra.settings import Settings

ALGORITHM = "ed25519"
KEY_FILE = "model_signing_key.pem"


class SignatureError(ValueError):
    """A signature is missing, malformed, made by a key nobody trusts, or does not match the bytes."""


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The form SIGHTLINE_MODEL_TRUSTED_KEYS takes: the raw 32-byte public key in base64."""
    return base64.b64encode(_raw_public(public_key)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key in base64: {exc}") from None


def parse_private_key(text: str) -> Ed25519PrivateKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the model signing key is not an Ed25519 key")
        return key
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise SignatureError(f"the model signing key is neither PEM nor a raw key in base64: {exc}") from None


class ModelSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def generate(cls) -> ModelSigner:
        return cls(Ed25519PrivateKey.generate())

    def public_text(self) -> str:
        return public_key_text(self.public_key)

    def sign(self, manifest: bytes) -> bytes:
        """The `manifest.sig` document for these manifest bytes."""
        signature = base64.b64encode(self._key.sign(manifest)).decode()
        return json.dumps({"algorithm": ALGORITHM, "key_id": self.key_id, "signature": signature},
                          sort_keys=True).encode()


def verify(manifest: bytes, document: bytes | None, trusted: Iterable[str]) -> str:
    """The id of the trusted key whose signature over `manifest` is in `document`; SignatureError when
    there is none, it is malformed, its key is not trusted, or it does not match."""
    if not document:
        raise SignatureError("the version has no signature (manifest.sig): refusing to load it")
    try:
        doc = json.loads(document)
        signature = base64.b64decode(doc["signature"], validate=True)
        claimed = str(doc["key_id"])
        algorithm = doc.get("algorithm")
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the signature document is malformed: {exc}") from None
    if algorithm != ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {algorithm!r}")
    keys = {key_id(k): k for k in (parse_public_key(t) for t in trusted)}
    public = keys.get(claimed)
    if public is None:
        raise SignatureError(f"the version is signed by key {claimed}, which is not trusted here")
    try:
        public.verify(signature, manifest)
    except InvalidSignature:
        raise SignatureError(f"the signature by key {claimed} does not match the manifest: refusing to load it") \
            from None
    return claimed


def _generated_key(path: Path) -> str:
    """The key file in the data dir, created once: of two processes racing, one key wins."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # atomic and exclusive
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text()


def signer_from_settings(settings: Settings) -> ModelSigner:
    if settings.model_signing_key:
        return ModelSigner(parse_private_key(settings.model_signing_key))
    return ModelSigner(parse_private_key(_generated_key(settings.resolved_data_dir / KEY_FILE)))


def trusted_keys_from_settings(settings: Settings) -> tuple[str, ...]:
    """The public keys serving accepts: the configured ones, and the signing key's own (unless only
    public keys are configured, as on a host that verifies and never signs)."""
    listed = tuple(k for k in settings.model_trusted_keys if k)
    if listed and not settings.model_signing_key:
        return listed
    return (*listed, signer_from_settings(settings).public_text())
