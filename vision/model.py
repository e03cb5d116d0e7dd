"""The classifier architecture (torchvision, built with weights=None: nothing is downloaded), the
normalisation layer in front of it, and the ONNX export.

A served model takes uint8 NHWC pixels, exactly what `Processing.resize` produces, and normalises them
inside its own graph: onnxruntime does that in a fraction of what the same arithmetic costs in numpy,
and a GPU receives a quarter of the bytes. Training runs its batches through the same PixelInput, so
the one normalisation is shared by training, the ONNX export and the torch backend.

A model calibrated for novelty (vision.novelty) answers two outputs from one forward pass: the logits
and the frame's novelty score, measured on the input and the backbone's first stage on the way through.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torchvision

from vision.novelty import EARLY_GRID, INPUT_GRID, NoveltyModel
from vision.processing import Processing
from vision.profiles import DEFAULT_ARCHITECTURE

ARCHITECTURES = ("mobilenet_v3_small", "resnet18")
__all__ = ["ARCHITECTURES", "DEFAULT_ARCHITECTURE", "ServedModel", "build_model", "export_onnx", "load_model"]


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


class NoveltyHead(torch.nn.Module):
    """features -> squared Mahalanobis distance / threshold (1.0 at the threshold), in the graph."""

    mean: torch.Tensor
    whitening: torch.Tensor
    inverse_threshold: torch.Tensor

    def __init__(self, model: NoveltyModel) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(model.mean, np.float32)), persistent=False)
        self.register_buffer("whitening", torch.from_numpy(np.asarray(model.whitening, np.float32)),
                             persistent=False)
        self.register_buffer("inverse_threshold", torch.tensor(1.0 / model.threshold, dtype=torch.float32),
                             persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.to(self.mean.dtype) - self.mean) @ self.whitening
        return (z * z).sum(dim=1) * self.inverse_threshold


def frame_features(inputs: torch.Tensor, early: torch.Tensor, early_grid: int) -> torch.Tensor:
    """The vector the novelty head measures: the normalised input's colour layout and the first
    stage's pooled feature maps, side by side."""
    layout = torch.nn.functional.adaptive_avg_pool2d(inputs, INPUT_GRID).flatten(1)
    texture = torch.nn.functional.adaptive_avg_pool2d(early, early_grid).flatten(1)
    return torch.cat([layout, texture], dim=1)


def split_backbone(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """(first stage, the rest up to the logits, the grid its feature maps are pooled to for novelty).
    Both halves share the backbone's modules (no copies), so its weights file stays the same."""
    if isinstance(model, torchvision.models.MobileNetV3):
        stem = model.features[:2]
        rest = torch.nn.Sequential(model.features[2:], model.avgpool, torch.nn.Flatten(1), model.classifier)
        return stem, rest, EARLY_GRID["mobilenet_v3_small"]
    if isinstance(model, torchvision.models.ResNet):
        stem = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
        rest = torch.nn.Sequential(model.layer2, model.layer3, model.layer4, model.avgpool, torch.nn.Flatten(1),
                                   model.fc)
        return stem, rest, EARLY_GRID["resnet18"]
    raise ValueError(f"no first stage is defined for {type(model).__name__}")


class ServedModel(torch.nn.Module):
    """PixelInput, then the backbone; with a NoveltyModel also the frame's novelty (1.0 at the
    calibrated threshold), from the same pass: (logits, novelty)."""

    def __init__(self, backbone: torch.nn.Module, processing: Processing, novelty: NoveltyModel | None = None) -> None:
        super().__init__()
        self.pixel_input = PixelInput(processing)
        self.stem, self.rest, self.early_grid = split_backbone(backbone)
        self.novelty = NoveltyHead(novelty) if novelty is not None else None

    def features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, the feature vector the novelty head measures) of uint8 NHWC pixels."""
        inputs = self.pixel_input(pixels)
        early = self.stem(inputs)
        return self.rest(early), frame_features(inputs, early, self.early_grid)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.features(pixels)
        if self.novelty is None:
            return logits
        return logits, self.novelty(features)


def serving_model(model: torch.nn.Module, processing: Processing, novelty: NoveltyModel | None = None) -> ServedModel:
    """The backbone behind its PixelInput (and the novelty head, when calibrated): what the backends
    run. Weights are stored for the backbone alone, so an artifact's weights file does not depend on
    this wrapper."""
    return ServedModel(model, processing, novelty).eval()


def export_onnx(model: torch.nn.Module, processing: Processing, novelty: NoveltyModel | None = None) -> bytes:
    """ONNX taking uint8 NHWC pixels, with a dynamic batch axis so one file serves every batch size;
    outputs `logits`, and `novelty` when the model is calibrated for it."""
    served = serving_model(model.eval(), processing, novelty)
    example = torch.zeros(2, processing.input_size, processing.input_size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    outputs = ["logits", "novelty"] if novelty is not None else ["logits"]
    program = torch.onnx.export(
        served, (example,), dynamo=True, input_names=["pixels"], output_names=outputs,
        dynamic_shapes=({0: batch},), external_data=False, verbose=False,
    )
    if program is None:  # only the legacy exporter (dynamo=False) answers None
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    return program.model_proto.SerializeToString()
