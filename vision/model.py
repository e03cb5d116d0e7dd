"""The classifier architecture (torchvision, built with weights=None: nothing is downloaded), the
normalisation layer in front of it, and the ONNX export.

A served model takes uint8 NHWC pixels, exactly what `Processing.resize` produces, and normalises them
inside its own graph: onnxruntime does that in a fraction of what the same arithmetic costs in numpy,
and a GPU receives a quarter of the bytes. Training runs its batches through the same PixelInput, so
the one normalisation is shared by training, the ONNX export and the torch backend.
"""

from __future__ import annotations

import io

import torch
import torchvision

from vision.processing import Processing

ARCHITECTURES = ("mobilenet_v3_small", "resnet18")
DEFAULT_ARCHITECTURE = "mobilenet_v3_small"


def build_model(architecture: str, num_classes: int) -> torch.nn.Module:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    return getattr(torchvision.models, architecture)(weights=None, num_classes=num_classes)


def load_model(architecture: str, num_classes: int, weights: bytes) -> torch.nn.Module:
    model = build_model(architecture, num_classes)
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval()


def weights_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


class PixelInput(torch.nn.Module):
    """uint8 NHWC RGB -> float NCHW, scaled to 0..1 and standardised with the manifest's mean and std."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, processing: Processing) -> None:
        super().__init__()
        mean = torch.tensor(processing.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(processing.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add per pixel.
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.permute(0, 3, 1, 2).to(self.scale.dtype) * self.scale + self.shift


def serving_model(model: torch.nn.Module, processing: Processing) -> torch.nn.Module:
    """The backbone behind its PixelInput: what the backends run. Weights are stored for the backbone
    alone, so an artifact's weights file does not depend on this wrapper."""
    return torch.nn.Sequential(PixelInput(processing), model).eval()


def export_onnx(model: torch.nn.Module, processing: Processing) -> bytes:
    """ONNX taking uint8 NHWC pixels, with a dynamic batch axis so one file serves every batch size."""
    model = serving_model(model.eval(), processing)
    example = torch.zeros(2, processing.input_size, processing.input_size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model, (example,), dynamo=True, input_names=["pixels"], output_names=["logits"],
        dynamic_shapes=({0: batch},), external_data=False, verbose=False,
    )
    if program is None:  # only the legacy exporter (dynamo=False) answers None
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    return program.model_proto.SerializeToString()
