"""`sightline retrain`: start a retraining run (the same as POST /v1/retraining) and follow it with a
progress bar (epoch, loss, ETA from the workflow's `progress` query) until it finishes. Ctrl-C stops
following; the run goes on (cancel it with POST /v1/retraining/{id}/cancel)."""

from __future__ import annotations

import asyncio
import getpass
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from api.services.retraining import RetrainingService, RunNotFound
from infra.db import open_pool
from infra.settings import Settings, get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.tables.audit_log import append_audit, cli_actor
from infra.temporal import connect
from workflows.retraining_types import RetrainingProgress, RetrainingTrigger

# Off a terminal (make, CI logs) rich would wrap at 80 columns and cut ids and URLs.
console = Console(width=None if Console().is_terminal else 200)


def _describe(state: str, progress: RetrainingProgress | None) -> dict[str, Any]:
    if progress is None:
        return {"description": state, "loss": "-", "eta": "-", "epoch": "-"}
    t = progress.training
    eta = f"{t.eta_s:.0f}s" if t.eta_s is not None else "-"
    return {"description": f"{progress.phase}", "loss": f"{t.loss:.4f}" if t.loss is not None else "-",
            "eta": eta, "epoch": f"{t.epoch}/{t.epochs}" if t.epochs else "-"}


async def follow(service: RetrainingService, workflow_id: str, poll_s: float = 1.0) -> tuple[str, Any]:
    """Show the run's progress until it closes; its final status and progress."""
    columns = (TextColumn("[bold]{task.description:<11}"), BarColumn(), TaskProgressColumn(),
               TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
               TextColumn("eta {task.fields[eta]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=1.0, epoch="-", loss="-", eta="-")
        while True:
            state, progress = await service.progress(workflow_id)
            fields = _describe(state, progress)
            done = 0.0
            if progress is not None and progress.training.steps:
                done = progress.training.step / progress.training.steps
            if progress is not None and progress.phase in ("evaluating", "registering", "done"):
                done = 1.0
            bar.update(task, completed=done, **fields)
            if state != "running":
                return state, progress
            await asyncio.sleep(poll_s)


async def _retrain(settings: Settings, overrides: dict[str, Any], note: str, wait: bool,
                   existing: str | None) -> int:
    url = database_url(settings)
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    async with open_pool(url, max_size=2) as pool:
        service = RetrainingService(pool, store_from_settings(settings), client, settings)
        if existing:
            workflow_id = existing
        else:
            triggered = await service.trigger(overrides, RetrainingTrigger("cli", cli_actor(), note=note))
            workflow_id = triggered.workflow_id
            async with pool.connection() as conn:
                await append_audit(conn, key_id=None, key_name=cli_actor(), role=None, action="retraining.start",
                                   resource=f"retraining/{workflow_id}", workflow_id=workflow_id,
                                   details={"started": triggered.started, "note": note, **overrides})
            verb = "started" if triggered.started else "exists already for this snapshot; nothing started:"
            console.print(f"retraining {verb} {workflow_id} (snapshot {triggered.snapshot_id}, "
                          f"{triggered.reviewed_frames} reviewed labels)")
            console.print(f"history: {settings.workflow_ui_url(workflow_id)}")
        if not wait:
            return 0
        try:
            state, progress = await follow(service, workflow_id)
        except RunNotFound as exc:
            console.print(f"[red]{exc}[/red]")
            return 1
        if progress is not None and progress.candidate_version:
            console.print(f"{state}: candidate {progress.candidate_version} -> {progress.outcome} "
                          f"({progress.outcome_reason})")
        else:
            console.print(f"{state}")
        return 0 if state == "completed" else 1


def retrain_command(
    note: str = typer.Option(f"requested from the CLI by {getpass.getuser()}", "--note", help="why: on the model card"),
    epochs: int = typer.Option(None, "--epochs", min=1, help="default: SIGHTLINE_RETRAINING_EPOCHS"),
    profile: str = typer.Option(None, "--profile", help="standard or tiny: the base generated set"),
    learning_rate: float = typer.Option(None, "--learning-rate", min=0.0),
    reviewed_share: float = typer.Option(None, "--reviewed-share", min=0.0, max=0.99,
                                         help="share of each batch drawn from reviewed frames"),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="do not start from production's weights"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the run with a progress bar"),
    follow_id: str = typer.Option(None, "--follow", help="follow an existing run instead of starting one"),
) -> None:
    """Retrain on the base set and every reviewed label so far; follow it with a progress bar."""
    overrides: dict[str, Any] = {k: v for k, v in {"epochs": epochs, "profile": profile,
                                                   "learning_rate": learning_rate,
                                                   "reviewed_share": reviewed_share}.items() if v is not None}
    if from_scratch:
        overrides["init_from_parent"] = False
    try:
        code = asyncio.run(_retrain(get_settings(), overrides, note, wait, follow_id))
    except KeyboardInterrupt:
        console.print("stopped following; the run goes on")
        code = 0
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        code = 2
    raise typer.Exit(code)
