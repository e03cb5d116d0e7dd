"""Signed artifacts: every version's manifest carries an Ed25519 signature; serving refuses a version
whose signature is missing, altered, or made by a key it does not trust, and the sha256 checks stay."""

from __future__ import annotations

import base64
import json

import pytest

from infra.settings import get_settings
from infra.store import LocalStore
from serving.client import ServingClient, ServingError
from vision.artifacts import MANIFEST, ONNX, SIGNATURE, IntegrityError, load_verified, sign_existing
from vision.signatures import (
    KEY_FILE,
    ModelSigner,
    SignatureError,
    parse_private_key,
    signer_from_settings,
    trusted_keys_from_settings,
    verify,
)

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


def _signature_key(manifest_key: str) -> str:
    return manifest_key.rsplit("/", 1)[0] + "/" + SIGNATURE


def test_a_signature_covers_every_byte_of_the_manifest():
    signer = ModelSigner.generate()
    document = signer.sign(b'{"files": {}}')
    assert verify(b'{"files": {}}', document, [signer.public_text()]) == signer.key_id
    with pytest.raises(SignatureError, match="does not match"):
        verify(b'{"files": {} }', document, [signer.public_text()])
    with pytest.raises(SignatureError, match="not trusted"):
        verify(b'{"files": {}}', document, [ModelSigner.generate().public_text()])
    with pytest.raises(SignatureError, match="no signature"):
        verify(b'{"files": {}}', None, [signer.public_text()])
    with pytest.raises(SignatureError, match="malformed"):
        verify(b'{"files": {}}', b"not json", [signer.public_text()])


def test_the_key_comes_from_settings_or_is_generated_once_in_the_data_dir(settings_factory, tmp_path):
    settings = settings_factory(data_dir=tmp_path / "keys")
    first = signer_from_settings(settings)
    assert (tmp_path / "keys" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert signer_from_settings(settings).key_id == first.key_id  # the same key every time
    assert trusted_keys_from_settings(settings) == (first.public_text(),)
    # Configured explicitly (PEM or raw base64), it wins over the file.
    other = ModelSigner.generate()
    raw = base64.b64encode(other._key.private_bytes_raw()).decode()
    configured = settings_factory(data_dir=tmp_path / "keys", model_signing_key=raw)
    assert signer_from_settings(configured).key_id == other.key_id
    assert parse_private_key(raw).public_key() is not None
    # A host that only verifies lists public keys and trusts exactly those.
    verifier = settings_factory(data_dir=tmp_path / "none", model_trusted_keys=[other.public_text()])
    assert trusted_keys_from_settings(verifier) == (other.public_text(),)


def _copy(store: LocalStore, row, prefix: str) -> str:
    """The version's artifact set under another prefix, byte for byte (manifest and signature too)."""
    for key in store.list(f"models/{row.version}/"):
        store.put(key.replace(f"models/{row.version}/", f"{prefix}/"), store.get(key))
    return f"{prefix}/{MANIFEST}"


def test_load_verified_refuses_missing_altered_and_untrusted_signatures(model_store, production_model):
    from vision.signatures import trusted_keys_from_settings

    trusted = trusted_keys_from_settings(get_settings())
    row = production_model
    manifest_key = _copy(model_store, row, "models/sigtest")
    load_verified(model_store, manifest_key, row.manifest_sha256, (ONNX,), trusted_keys=trusted)

    good = model_store.get(_signature_key(manifest_key))
    doc = json.loads(good)
    flipped = bytearray(base64.b64decode(doc["signature"]))
    flipped[0] ^= 0x01
    model_store.put(_signature_key(manifest_key), json.dumps({**doc, "signature": base64.b64encode(bytes(flipped))
                                                              .decode()}).encode())
    with pytest.raises(IntegrityError, match="does not match"):
        load_verified(model_store, manifest_key, row.manifest_sha256, (ONNX,), trusted_keys=trusted)

    model_store.put(_signature_key(manifest_key), ModelSigner.generate().sign(model_store.get(manifest_key)))
    with pytest.raises(IntegrityError, match="not trusted"):
        load_verified(model_store, manifest_key, row.manifest_sha256, (ONNX,), trusted_keys=trusted)

    model_store.delete(_signature_key(manifest_key))
    with pytest.raises(IntegrityError, match="no signature"):
        load_verified(model_store, manifest_key, row.manifest_sha256, (ONNX,), trusted_keys=trusted)

    # A version from before signatures is signed by an operator (`sightline model sign`), if its manifest
    # still matches the registry.
    sign_existing(model_store, manifest_key, row.manifest_sha256, signer_from_settings(get_settings()))
    load_verified(model_store, manifest_key, row.manifest_sha256, (ONNX,), trusted_keys=trusted)
    with pytest.raises(IntegrityError, match="sha256"):
        sign_existing(model_store, manifest_key, "0" * 64, signer_from_settings(get_settings()))


async def test_serving_refuses_a_version_with_a_tampered_signature(serving_url, registry, model_store,
                                                                    trained_model, production_model):
    from vision.publishing import register_trained

    version = register_trained(registry, model_store, trained_model, parent_version=production_model.version,
                               created_by="tests")
    signature = _signature_key(version.manifest_key)
    doc = json.loads(model_store.get(signature))
    forged = ModelSigner.generate().sign(model_store.get(version.manifest_key))
    # The trusted key's id with another key's signature: the id matches, the bytes do not.
    model_store.put(signature, json.dumps({**json.loads(forged), "key_id": doc["key_id"]}).encode())
    async with ServingClient(serving_url) as client:
        with pytest.raises(ServingError) as refused:
            await client.classify([("a", "frames/sha256/00/" + "0" * 64)], model=version.version)
    assert refused.value.status == 500 and refused.value.code == "model_integrity"
    assert "signature" in str(refused.value)
