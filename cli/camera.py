"""`sightline camera`: frames from the generated inspection-line camera, written to a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vision.camera import CLASSES, Conditions, generate_frames, write_frames

console = Console()


def camera_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for the JPEG frames and labels.csv")],
    camera_id: str = typer.Option("line-1", "--camera-id"),
    count: int = typer.Option(64, "--count", min=1),
    seed: int = typer.Option(0, "--seed"),
    brightness: float = typer.Option(1.0, "--brightness", help="1.0 normal, 0.6 a dim line"),
    blur: float = typer.Option(0.0, "--blur", help="Gaussian blur radius in pixels"),
    noise: float = typer.Option(0.0, "--noise", help="sensor noise std in 0..255 units"),
    viewpoint_shift: float = typer.Option(0.0, "--viewpoint-shift", help="0..1: parts off-centre and rotated"),
    tint: str = typer.Option("1,1,1", "--tint", help="per-channel gains R,G,B"),
    defect_style: str = typer.Option("standard", "--defect-style", help="standard or changed"),
    quality: int = typer.Option(90, "--jpeg-quality", min=1, max=100),
) -> None:
    """Generate frames from a simulated inspection-line camera (deterministic by seed)."""
    try:
        gains = tuple(float(v) for v in tint.split(","))
        if len(gains) != 3:
            raise ValueError(f"--tint takes three channel gains R,G,B, not {tint!r}")
        conditions = Conditions(brightness=brightness, blur=blur, noise=noise, viewpoint_shift=viewpoint_shift,
                                tint=gains, defect_style=defect_style)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    frames = generate_frames(camera_id, count, seed, conditions)
    labels = write_frames(frames, out, quality)
    counts = ", ".join(f"{c} {sum(f.label == c for f in frames)}" for c in CLASSES)
    console.print(f"wrote {len(frames)} frames to {out} ({counts}); labels in {labels}")
