"""torch for a detection version (vision.detector): the served graph built from the weights, on CUDA in
fp16 (novelty in fp32) or fp32 on the CPU, answering the same outputs as its ONNX export."""

from __future__ import annotations

import numpy as np
import torch

from serving.backends.torch_backend import placed, torch_device
from vision.artifacts import Manifest
from vision.detector import ServedDetector, load_detector
from vision.novelty import NoveltyModel


class TorchDetectorBackend:
    def __init__(self, manifest: Manifest, weights: bytes, device: str = "cuda", threads: int | None = None,
                 novelty: bytes | None = None) -> None:
        self.name, self.device, self.half = torch_device(device, threads)
        detector = load_detector(len(manifest.processing.classes), weights)
        statistics = NoveltyModel.from_bytes(novelty) if novelty else None
        self.model = placed(ServedDetector(detector, manifest.processing, statistics), self.device, self.half)

    @torch.inference_mode()
    def outputs(self, pixels: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).to(self.device)
        return [out.float().cpu().numpy() if out.is_floating_point() else out.cpu().numpy() for out in self.model(x)]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.outputs(pixels)[0]
