"""`sightline demo`: the whole loop (cli.demo_story), or one batch of generated frames through the API,
waited for, with its result and the link to its workflow history in the Temporal UI."""

from __future__ import annotations

import time
import uuid

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import get_settings

console = Console(width=None if Console().is_terminal else 160)


def _generated_frames(camera_id: str, count: int, seed: int) -> tuple[list[tuple[str, bytes, str]], dict[str, str]]:
    """JPEG files from the generated inspection-line camera, and the true label of each."""
    from vision.camera import NORMAL, generate_frames

    frames = generate_frames(camera_id, count, seed, NORMAL)
    files = [(f"frame-{i:03d}.jpg", f.jpeg(), "image/jpeg") for i, f in enumerate(frames)]
    return files, {name: f.label for (name, _, _), f in zip(files, frames, strict=True)}


def _demo_key(settings) -> str:
    """An ingest key for the demo, made straight in the local stack's database (shown nowhere)."""
    import asyncio

    import psycopg
    from psycopg.rows import dict_row

    from infra.stack_urls import database_url
    from infra.tables.api_keys import create_key

    async def create() -> str:
        async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True,
                                                         row_factory=dict_row) as conn:
            return (await create_key(conn, "sightline demo", "ingest")).raw_key

    return asyncio.run(create())


def demo_command(
    story: bool = typer.Option(True, "--story/--one-batch",
                               help="the whole loop (drift, retraining, rollout), or one batch and its result"),
    count: int = typer.Option(16, help="frames in the batch (--one-batch)"),
    camera_id: str = typer.Option("demo-cam", help="camera id"),
    seed: int = typer.Option(0, help="seed of the generated frames"),
    timeout: float = typer.Option(300, help="seconds to wait for the batch"),
    api_key: str = typer.Option("", envvar="SIGHTLINE_API_KEY",
                                help="API key (role ingest); by default one is made in the local database"),
    edge_only: bool = typer.Option(False, "--edge-only",
                                   help="only the story's edge chapter: a link drops and returns, every frame arrives"),
    detection_only: bool = typer.Option(False, "--detection-only",
                                        help="only the story's detection chapter: a detector serves one camera, "
                                             "its boxes on the reviewer page (a screenshot under the data dir)"),
) -> None:
    """The whole loop on the local stack: two cameras, a scripted reviewer, a lighting shift, drift,
    retraining, shadow and canary, promotion, an edge agent's dropped link, a detector on one camera with
    its boxes on the reviewer page. With --one-batch: submit generated frames (and one corrupt
    file) as a batch and wait for the result."""
    settings = get_settings()
    if detection_only:
        from cli.detection_story import run as run_detection_chapter

        raise typer.Exit(run_detection_chapter(settings, console))
    if edge_only:
        from cli.edge_story import run as run_edge_chapter

        raise typer.Exit(run_edge_chapter(settings, console, api_key or _demo_key(settings)))
    if story:
        from cli.demo_story import run

        raise typer.Exit(run(settings, console))
    api_key = api_key or _demo_key(settings)
    headers = {"Authorization": f"Bearer {api_key}"}
    generated, truth = _generated_frames(camera_id, count, seed)
    files = [("frames", f) for f in generated]
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
    table = Table("frame", "status", "size", "true label", "predicted", "confidence", "routed", "reason")
    for frame in batch["frames"]:
        prediction = frame.get("prediction") or {}
        table.add_row(
            frame["filename"],
            frame["status"],
            f"{frame['width']}x{frame['height']}" if frame["width"] else "-",
            truth.get(frame["filename"], "-"),
            prediction.get("label", "-"),
            f"{prediction['confidence']:.3f}" if prediction else "-",
            ", ".join(frame.get("routes") or []),
            frame["reject_reason"] or "",
        )
    console.print(table)
    console.print(
        f"batch [bold]{batch['batch_id']}[/]: {batch['status']}, {batch['accepted_count']} accepted, "
        f"{batch['rejected_count']} rejected, model {batch['model_version']}, labels {batch['label_counts']}, "
        f"{batch['sent_to_review']} sent to review, {batch['defect_count']} confident defects"
    )
    console.print(f"Temporal UI: {batch['temporal_ui_url']}")
    if batch["sent_to_review"]:
        console.print(f"reviewer page: {settings.resolved_api_url}/review "
                      "(sign in with a key from `sightline keys create --name you --role reviewer`)")
