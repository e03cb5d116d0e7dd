"""`sightline demo`: submit a batch of generated frames through the API, wait for it, print the result
and the link to its workflow history in the Temporal UI."""

from __future__ import annotations

import io
import time
import uuid

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import get_settings

console = Console(width=None if Console().is_terminal else 160)


def _generated_frames(count: int, seed: int) -> list[tuple[str, bytes, str]]:
    try:
        from serving.camera import Conditions, encode_jpeg, generate_frames

        frames = generate_frames("demo-cam", count, seed, Conditions())
        return [(f"frame-{i:03d}.jpg", encode_jpeg(f.image), "image/jpeg") for i, f in enumerate(frames)]
    except ImportError:
        from PIL import Image, ImageDraw

        out = []
        for i in range(count):
            image = Image.new("RGB", (128, 128), (90 + i % 60, 90, 100))
            ImageDraw.Draw(image).rectangle((20 + i % 30, 30, 100, 90), fill=(180, 180, 170))
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=90)
            out.append((f"frame-{i:03d}.jpg", buf.getvalue(), "image/jpeg"))
        return out


def demo_command(
    count: int = typer.Option(16, help="frames in the batch"),
    camera_id: str = typer.Option("demo-cam", help="camera id"),
    seed: int = typer.Option(0, help="seed of the generated frames"),
    timeout: float = typer.Option(300, help="seconds to wait for the batch"),
    api_key: str = typer.Option("", envvar="SIGHTLINE_API_KEY", help="API key (role ingest)"),
) -> None:
    """Submit generated frames (and one corrupt file) as a batch and wait for the result."""
    settings = get_settings()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    files = [("frames", f) for f in _generated_frames(count, seed)]
    files.append(("frames", ("corrupt.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG", "image/jpeg")))
    key = f"demo-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=settings.resolved_api_url, headers=headers, timeout=60) as http:
        response = http.post("/v1/batches", data={"camera_id": camera_id, "site_id": "demo-site",
                                                  "idempotency_key": key}, files=files)
        if response.status_code >= 400:
            console.print(f"[red]submit failed {response.status_code}:[/] {response.text}")
            raise typer.Exit(1)
        accepted = response.json()
        console.print(f"submitted [bold]{accepted['batch_id']}[/] with {accepted['frame_count']} frames")
        deadline = time.monotonic() + timeout
        with console.status("waiting for the batch"):
            while True:
                batch = http.get(f"/v1/batches/{accepted['batch_id']}").json()
                if batch["status"] in ("completed", "failed"):
                    break
                if time.monotonic() > deadline:
                    console.print(f"[red]the batch did not finish within {timeout:.0f}s[/] (status {batch['status']})")
                    raise typer.Exit(1)
                time.sleep(0.5)
    table = Table("frame", "status", "size", "label", "confidence", "reason")
    for frame in batch["frames"]:
        prediction = frame.get("prediction") or {}
        table.add_row(
            frame["filename"],
            frame["status"],
            f"{frame['width']}x{frame['height']}" if frame["width"] else "-",
            prediction.get("label", "-"),
            f"{prediction['confidence']:.3f}" if prediction else "-",
            frame["reject_reason"] or "",
        )
    console.print(table)
    console.print(
        f"batch [bold]{batch['batch_id']}[/]: {batch['status']}, {batch['accepted_count']} accepted, "
        f"{batch['rejected_count']} rejected"
    )
    console.print(f"Temporal UI: {batch['temporal_ui_url']}")
