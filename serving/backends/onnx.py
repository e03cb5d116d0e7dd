"""onnxruntime on the CPU: the default backend where there is no GPU (about 3x torch on these cores)."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from vision.processing import Processing


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_bytes: bytes, processing: Processing, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Explicit, because Ray sets OMP_NUM_THREADS in replicas and ORT would otherwise guess.
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: a spinning pool burns the cores the preprocessor and the
        # Serve proxy need on the same machine, and gains little at these batch sizes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        # Exports take uint8 NHWC and normalise in the graph; an export that takes float32 NCHW
        # (made before the normalisation moved into the graph) gets it done here instead.
        self.legacy_processing = processing if model_input.type == "tensor(float)" else None
        # Exports of versions calibrated for novelty answer it as a second output.
        self.has_novelty = len(self.session.get_outputs()) > 1

    def _run(self, pixels: np.ndarray) -> list[np.ndarray]:
        if self.legacy_processing is not None:
            return self.session.run(None, {self.input_name: self.legacy_processing.normalize(pixels)})
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.uint8)})

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(pixels)[0]

    def outputs(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Every output of one pass, in the graph's order: a detector's boxes, scores, classes[, novelty]."""
        return self._run(pixels)

    def scores(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self._run(pixels)
        return outputs[0], outputs[1] if self.has_novelty else None
