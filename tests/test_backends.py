"""The backends behind one interface agree with each other; unavailable ones say why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.backends import BackendUnavailable, make_backend
from serving.backends.tensorrt import tensorrt_unavailable_reason
from vision.artifacts import ONNX, WEIGHTS, load_verified
from vision.camera import generate_frames

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


@pytest.fixture(scope="module")
def artifacts(model_store, production_model):
    return load_verified(model_store, production_model.manifest_key, production_model.manifest_sha256, (WEIGHTS, ONNX))


@pytest.fixture(scope="module")
def pixels(artifacts):
    manifest, _ = artifacts
    p = manifest.processing
    return np.stack([p.resize(f.image) for f in generate_frames("backend-line", 24, seed=11)])


def test_onnxruntime_and_torch_agree_within_tolerance(artifacts, pixels):
    manifest, files = artifacts
    onnx = make_backend("onnxruntime", manifest, files, threads=1).predict(pixels)
    ref = make_backend("torch-cpu", manifest, files, threads=1).predict(pixels)
    assert onnx.shape == ref.shape == (24, len(manifest.processing.classes))
    np.testing.assert_allclose(onnx, ref, atol=1e-3, rtol=1e-3)
    assert (onnx.argmax(1) == ref.argmax(1)).all()
    # Batch size does not change a frame's answer (the ONNX graph has a dynamic batch axis).
    one_by_one = make_backend("onnxruntime", manifest, files, threads=1)
    single = np.concatenate([one_by_one.predict(pixels[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, onnx[:3], atol=1e-4)


def test_the_export_takes_uint8_frames_and_an_older_float_export_still_serves(artifacts, pixels):
    import onnxruntime as ort

    from serving.backends.onnx import OnnxRuntimeBackend
    from vision.model import load_model

    manifest, files = artifacts
    model_input = ort.InferenceSession(files[ONNX], providers=["CPUExecutionProvider"]).get_inputs()[0]
    size = manifest.processing.input_size
    assert model_input.type == "tensor(uint8)" and model_input.shape[1:] == [size, size, 3]
    # An export from before the normalisation moved into the graph takes float32 NCHW: the backend
    # normalises for it, and both give the same answers.
    backbone = load_model(manifest.architecture, len(manifest.processing.classes), files[WEIGHTS])
    program = torch.onnx.export(backbone, (torch.zeros(2, 3, size, size),), dynamo=True, input_names=["pixels"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), verbose=False)
    assert program is not None
    older = OnnxRuntimeBackend(program.model_proto.SerializeToString(), manifest.processing, threads=1)
    current = make_backend("onnxruntime", manifest, files, threads=1)
    np.testing.assert_allclose(older.predict(pixels), current.predict(pixels), atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_torch_cuda_fp16_agrees_with_onnxruntime(artifacts, pixels):
    manifest, files = artifacts
    gpu = make_backend("torch-cuda", manifest, files).predict(pixels)
    cpu = make_backend("onnxruntime", manifest, files).predict(pixels)
    m = manifest.processing
    p_gpu, p_cpu = m.probabilities(gpu), m.probabilities(cpu)
    assert np.abs(p_gpu - p_cpu).max() < 0.02  # fp16
    assert (gpu.argmax(1) == cpu.argmax(1)).mean() >= 0.95


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_torch_cuda_without_a_gpu_says_why(artifacts):
    manifest, files = artifacts
    with pytest.raises(BackendUnavailable, match="CUDA"):
        make_backend("torch-cuda", manifest, files)


_TRT_REASON = tensorrt_unavailable_reason()


@pytest.mark.skipif(_TRT_REASON is None, reason="tensorrt is available here")
def test_tensorrt_without_the_package_gives_a_clear_error(artifacts):
    manifest, files = artifacts
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        make_backend("tensorrt", manifest, files)


@pytest.mark.skipif(_TRT_REASON is not None, reason=f"TensorRT unavailable: {_TRT_REASON}")
def test_tensorrt_engine_agrees_with_onnxruntime(artifacts, pixels):
    manifest, files = artifacts
    trt = make_backend("tensorrt", manifest, files).predict(pixels)
    cpu = make_backend("onnxruntime", manifest, files).predict(pixels)
    assert (trt.argmax(1) == cpu.argmax(1)).mean() >= 0.95


def test_unknown_backend_is_refused(artifacts):
    manifest, files = artifacts
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("tpu", manifest, files)
