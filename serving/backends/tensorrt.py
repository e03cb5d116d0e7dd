"""TensorRT: an engine built from the ONNX export, where the `tensorrt` package imports (GPU hosts).

The engine is built with an optimisation profile covering batch sizes 1..max_batch and fp16 enabled.
Its input is whatever the export takes: uint8 NHWC (normalised inside the graph), or float32 NCHW for
exports made before the normalisation moved into the graph.
"""

from __future__ import annotations

import numpy as np

from serving.backends.base import BackendUnavailable
from vision.processing import Processing


def tensorrt_unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt is not installed ({exc}); it needs an NVIDIA GPU host with the TensorRT wheels"
    try:
        import torch

        if not torch.cuda.is_available():
            return "tensorrt imports but no CUDA GPU is visible"
    except ImportError:
        return "tensorrt backend needs torch for CUDA buffers"
    return None


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, onnx_bytes: bytes, processing: Processing, max_batch: int = 256) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import tensorrt as trt
        import torch

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse the ONNX export: {errors}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        model_input = network.get_input(0)
        name = model_input.name
        shape = tuple(model_input.shape)[1:]  # the batch axis is dynamic, the rest fixed by the export
        self.legacy_processing = processing if model_input.dtype == trt.float32 else None
        profile.set_shape(name, (1, *shape), (min(32, max_batch), *shape), (max_batch, *shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT failed to build an engine from the ONNX export")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        self.input_name = name
        self.output_name = network.get_output(0).name
        # Versions calibrated for novelty export it as a second output.
        self.novelty_name = network.get_output(1).name if network.num_outputs > 1 else None
        self.max_batch = max_batch
        self.torch = torch
        self.stream = torch.cuda.Stream()

    def scores(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self.torch
        if self.legacy_processing is not None:
            pixels = self.legacy_processing.normalize(pixels)
        else:
            pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        logits, novelty = [], []
        for i in range(0, len(pixels), self.max_batch):
            x = torch.from_numpy(pixels[i : i + self.max_batch]).cuda()
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            outputs = {}
            for name in (self.output_name, self.novelty_name):
                if name is None:
                    continue
                out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            self.context.execute_async_v3(self.stream.cuda_stream)
            self.stream.synchronize()
            logits.append(outputs[self.output_name].cpu().numpy())
            if self.novelty_name is not None:
                novelty.append(outputs[self.novelty_name].cpu().numpy())
        return np.concatenate(logits), np.concatenate(novelty) if novelty else None

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.scores(pixels)[0]
