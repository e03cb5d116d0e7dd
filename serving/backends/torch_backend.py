"""torch: on CUDA in fp16 with channels_last (the GPU path), or fp32 on the CPU (a reference for tests)."""

from __future__ import annotations

import numpy as np
import torch

from serving.backends.base import BackendUnavailable
from vision.artifacts import Manifest
from vision.model import load_model, serving_model
from vision.novelty import NoveltyModel


def torch_device(device: str, threads: int | None) -> tuple[str, torch.device, bool]:
    """The backend's name, device and whether it runs in fp16 (on CUDA only)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("torch-cuda needs a CUDA GPU and none is visible here "
                                 "(torch.cuda.is_available() is False)")
    if threads:
        torch.set_num_threads(threads)
    return f"torch-{device}", torch.device(device), device == "cuda"


def placed(model: torch.nn.Module, device: torch.device, half: bool) -> torch.nn.Module:
    """The served module on its device, in fp16 with channels_last on the GPU, in eval mode."""
    model = model.to(device)
    if half:
        model = model.half().to(memory_format=torch.channels_last)
        novelty = getattr(model, "novelty", None)
        if novelty is not None:
            novelty.float()  # distances in fp32: fp16 would round away the small differences
    return model.eval()


class TorchBackend:
    def __init__(self, manifest: Manifest, weights: bytes, device: str = "cuda", threads: int | None = None,
                 novelty: bytes | None = None) -> None:
        self.name, self.device, self.half = torch_device(device, threads)
        backbone = load_model(manifest.architecture, len(manifest.processing.classes), weights)
        statistics = NoveltyModel.from_bytes(novelty) if novelty else None
        self.model = placed(serving_model(backbone, manifest.processing, statistics), self.device, self.half)

    @torch.inference_mode()
    def scores(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # uint8 crosses to the GPU (a quarter of float32's bytes) and is normalised there, in fp16.
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))
        if self.half:
            x = x.pin_memory().to(self.device, non_blocking=True)
        out = self.model(x)
        if isinstance(out, tuple):
            return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
        return out.float().cpu().numpy(), None

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.scores(pixels)[0]
