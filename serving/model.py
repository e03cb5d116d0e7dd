"""The classifier architecture (torchvision, built with weights=None: nothing is downloaded) and its
ONNX export."""

from __future__ import annotations

import io

import torch
import torchvision

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


def export_onnx(model: torch.nn.Module, input_size: int) -> bytes:
    """ONNX with a dynamic batch axis, so one file serves every batch size."""
    model = model.eval()
    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model, (example,), dynamo=True, input_names=["pixels"], output_names=["logits"],
        dynamic_shapes=({0: batch},), external_data=False, verbose=False,
    )
    buf = io.BytesIO()
    program.save(buf)
    return buf.getvalue()
