"""`sightline edge`: run an edge agent beside a site's cameras (run), and see what it is doing (status).

Everything is configured by SIGHTLINE_EDGE_* (edge.settings.EdgeSettings); the options below override
the common ones for one run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from edge.settings import EdgeSettings
from edge.status import EdgeStatus, offline_status

edge_app = typer.Typer(help="The edge agent: capture beside the line, a durable queue, local decisions.",
                       no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 160)


def _settings(**overrides: Any) -> EdgeSettings:
    try:
        return EdgeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


@edge_app.command()
def run(
    api_url: str | None = typer.Option(None, "--api-url", help="the central API (SIGHTLINE_EDGE_API_URL)"),
    site_id: str | None = typer.Option(None, "--site", help="the site these cameras belong to"),
    camera_id: str | None = typer.Option(None, "--camera-id", help="camera of frames that name none"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="the queue and the last good model"),
    port: int | None = typer.Option(None, "--port", help="loopback port of POST /frames, /status, /metrics"),
    watch: Path | None = typer.Option(None, "--watch", help="take frames dropped into this folder"),
    camera_fps: float | None = typer.Option(None, "--camera-fps", help="run the generated camera at this rate"),
) -> None:
    """Run an agent in the foreground until SIGTERM or Ctrl-C. The API key is SIGHTLINE_EDGE_API_KEY (an
    ingest key of the site): it is never an option, so it stays out of the process list."""
    from edge.agent import main

    main(_settings(api_url=api_url, site_id=site_id, camera_id=camera_id, data_dir=data_dir, listen_port=port,
                   watch_dir=watch, camera_fps=camera_fps))


def fetch_status(settings: EdgeSettings) -> EdgeStatus:
    """The running agent's own report, or what its data dir says when none answers."""
    try:
        response = httpx.get(f"{settings.local_url}/status", timeout=3)
        response.raise_for_status()
        return EdgeStatus.from_dict(response.json())
    except (httpx.HTTPError, ValueError):
        return offline_status(settings)


@edge_app.command()
def status(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="the agent's data dir"),
    port: int | None = typer.Option(None, "--port", help="the agent's loopback port"),
    as_json: bool = typer.Option(False, "--json", help="the status as JSON"),
) -> None:
    """Queue depth, the oldest frame's age, upload rate, last contact, model version, and how often the
    local and central predictions disagreed. Exits 3 when the agent is not running."""
    report = fetch_status(_settings(data_dir=data_dir, listen_port=port))
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        table = Table("", "", show_header=False, box=None)
        for what, value in report.lines():
            table.add_row(f"[bold]{what}[/]", value)
        console.print(table)
        if report.recent_disagreements:
            recent = Table("camera", "frame", "local", "central", title="latest disagreements")
            for d in report.recent_disagreements:
                recent.add_row(d["camera_id"], d["filename"], f"{d['local_label']} ({d['local_model']})",
                               f"{d['central_label']} ({d['central_model']})")
            console.print(recent)
    if not report.running:
        raise typer.Exit(3)
