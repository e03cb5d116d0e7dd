"""Training, the artifact set and its integrity checks, and the registry's aliases and history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vision.artifacts import (
    CARD,
    MANIFEST,
    NOVELTY,
    ONNX,
    REFERENCE,
    WEIGHTS,
    IntegrityError,
    Manifest,
    load_verified,
)
from vision.camera import CLASSES, generate_frames
from vision.model import PixelInput
from vision.processing import Processing
from vision.registry import ModelNotFound
from vision.training import evaluate, frames_to_arrays

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


def test_training_beats_chance_by_a_wide_margin_on_held_out_frames(trained_model):
    chance = 1 / len(CLASSES)
    assert trained_model.metrics["held_out_accuracy"] >= chance + 0.4, trained_model.metrics
    # And on frames of a camera and seed it never saw, measured here rather than trusted from metrics.
    frames = generate_frames("unseen-line", 120, seed=4242)
    x, y = frames_to_arrays(frames, trained_model.processing)
    assert evaluate(trained_model.model, trained_model.processing, x, y)["accuracy"] >= chance + 0.4


def test_processing_is_one_definition_for_training_and_serving(trained_model):
    p = trained_model.processing
    assert p.classes == CLASSES and p.input_size == 64
    image = generate_frames("line-1", 1, seed=1)[0].image
    pixels = p.resize(image)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert np.array_equal(p.resize(np.asarray(image)), pixels)  # a PIL image or its array: the same pixels
    x = p.normalize(pixels)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    # Standardised with the recorded mean/std: a mid-grey pixel maps to (0.5 - mean) / std.
    grey = p.normalize(np.full((1, 2, 2, 3), 127.5, np.float32).astype(np.uint8))
    np.testing.assert_allclose(grey[0, :, 0, 0], (127 / 255 - np.array(p.mean)) / np.array(p.std), rtol=1e-5)
    # The layer the served graph and training use computes exactly that normalisation.
    batch = np.stack([pixels, pixels[::-1].copy()])
    in_graph = PixelInput(p)(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(in_graph, p.normalize(batch), atol=1e-5)
    decision = p.decide(np.array([[0.0, 3.0, 0.0, 0.0]]))[0]
    probs = decision.probabilities
    assert decision.label == "scratch" and decision.confidence == max(probs.values())
    assert abs(sum(probs.values()) - 1) < 1e-3
    assert Processing.from_dict(p.to_dict()) == p


def test_large_frames_are_shrunk_by_area_not_aliased():
    # Noise shrunk 8x: averaging each 8x8 area divides its spread by 8 (std about 9); bilinear
    # sampling reads 2x2 pixels per output and keeps half of it (about 37), aliasing fine texture.
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    shrunk = Processing(classes=CLASSES, input_size=64).resize(noise)
    assert shrunk.shape == (64, 64, 3) and shrunk.std() < 15


def test_a_version_is_an_artifact_set_with_a_complete_manifest(registry, model_store, production_model):
    manifest, _ = load_verified(model_store, production_model.manifest_key, production_model.manifest_sha256,
                                (WEIGHTS, ONNX))
    assert manifest.version == production_model.version
    # The weights and export, the novelty statistics, the drift reference and the model card.
    assert set(manifest.files) == {WEIGHTS, ONNX, NOVELTY, REFERENCE, CARD}
    raw = json.loads(model_store.get(production_model.manifest_key))
    for key in ("classes", "input_size", "normalization", "files", "metrics", "parent_version", "dataset_snapshot_id"):
        assert key in raw, key
    assert raw["dataset_snapshot_id"].startswith("generated-")
    assert raw["metrics"]["held_out_accuracy"] == production_model.metrics["held_out_accuracy"]
    assert all(len(f["sha256"]) == 64 for f in raw["files"].values())


def _copy_version(store, row, tamper: str | None):
    """A copy of the production artifacts under another prefix, optionally with one file altered."""
    manifest = Manifest.from_json(store.get(row.manifest_key))
    for name, entry in manifest.files.items():
        data = store.get(entry["key"])
        new_key = entry["key"].replace(f"models/{row.version}/", "models/tampered/")
        store.put(new_key, data + (b"\0" if name == tamper else b""))
        entry["key"] = new_key
    body = manifest.to_json()
    store.put("models/tampered/" + MANIFEST, body)
    return body


def test_a_file_whose_sha256_differs_from_the_manifest_is_refused(model_store, production_model):
    from infra.store import sha256_hex

    body = _copy_version(model_store, production_model, tamper=ONNX)
    with pytest.raises(IntegrityError, match="refusing to load"):
        load_verified(model_store, "models/tampered/" + MANIFEST, sha256_hex(body), (ONNX,))
    # The untouched weights of the same copy still load: the check is per file.
    load_verified(model_store, "models/tampered/" + MANIFEST, sha256_hex(body), (WEIGHTS,))


def test_a_tampered_manifest_is_refused(model_store, production_model):
    body = _copy_version(model_store, production_model, tamper=None)
    edited = body.replace(b'"input_size": 64', b'"input_size": 65')
    assert edited != body
    model_store.put("models/tampered/" + MANIFEST, edited)
    with pytest.raises(IntegrityError):
        load_verified(model_store, "models/tampered/" + MANIFEST, production_model.manifest_sha256, (ONNX,))


def test_aliases_move_and_every_change_is_in_the_history(registry, model_store, trained_model, production_model):
    from vision.publishing import register_trained

    child = register_trained(registry, model_store, trained_model, parent_version=production_model.version,
                             created_by="tests")
    assert child.parent_version == production_model.version and child.number > production_model.number
    assert registry.set_alias("candidate", child.version, "alice", "try it") is None
    assert registry.set_alias("candidate", child.version, "alice", "again") == child.version  # no-op, not recorded
    assert registry.set_alias("shadow", child.version, "bob", "shadow it") is None
    assert registry.set_alias("shadow", None, "bob", "done") == child.version
    assert registry.resolve("candidate").version == child.version
    assert registry.resolve(child.version).version == child.version
    with pytest.raises(ModelNotFound):
        registry.resolve("shadow")
    with pytest.raises(ModelNotFound):
        registry.set_alias("candidate", "v999999")
    with pytest.raises(ValueError):
        registry.set_alias("staging", child.version)
    history = [(c.alias, c.from_version, c.to_version, c.changed_by) for c in registry.alias_history()]
    assert ("candidate", None, child.version, "alice") in history
    assert ("shadow", None, child.version, "bob") in history and ("shadow", child.version, None, "bob") in history
    assert [c.reason for c in registry.alias_history("candidate")].count("again") == 0
    listed = {v.version: v for v in registry.list_versions()}
    assert "candidate" in listed[child.version].aliases and "production" in listed[production_model.version].aliases
