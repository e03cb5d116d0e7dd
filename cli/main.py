"""`sightline`: the root command. It runs the local stack (up, down, status), applies the database
migrations (migrate), and mounts every other command group with plain imports, so a module that fails
to import fails the command line at once instead of taking its commands away in silence."""

from __future__ import annotations

from typing import Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cli.camera import camera_command
from cli.camera_health import print_camera_health
from cli.dataset import dataset_app
from cli.deletions import deletions_app
from cli.demo import demo_command
from cli.edge import edge_app
from cli.keys import keys_app
from cli.model import model_app
from cli.privacy import privacy_app
from cli.retrain import retrain_command
from cli.rollout import rollout_app
from cli.trace import trace_command
from cli.webhooks import webhooks_app
from infra.schema_migrations import MigrationError, apply_migrations
from infra.settings import get_settings
from infra.stack import LocalStack, PartStatus, StackError
from infra.stack_urls import database_url

app = typer.Typer(help="Sightline: durable orchestration for production computer vision.", no_args_is_help=True)
# Off a terminal (make, CI logs) rich would wrap at 80 columns and cut URLs and paths.
console = Console(width=None if Console().is_terminal else 200)


_STATE_STYLE = {"running": "green", "unhealthy": "yellow", "down": "red"}


def _status_table(parts: list[PartStatus]) -> Table:
    table = Table("part", "state", "pid", "where", "log")
    for part in parts:
        state = f"[{_STATE_STYLE[part.state]}]{part.state}[/]"
        table.add_row(part.name, state, str(part.pid or "-"), part.url, str(part.log or "-"))
    return table


def _print_status(parts: list[PartStatus]) -> None:
    """The table, then for each part that is down or unhealthy why, with the end of its log."""
    console.print(_status_table(parts))
    for part in parts:
        if part.problem:
            why, *tail = part.problem.splitlines()
            console.print(f"[bold]{part.name}[/]: {escape(why)}")
            for line in tail:
                console.print(f"    {escape(line)}", soft_wrap=True)


# What `up` waits for at each part.
_WAITING_FOR = {"postgres": "Postgres", "temporal": "the Temporal server and its UI",
                "serving": "Ray Serve (and its model)", "worker": "the worker to poll its task queues",
                "api": "the API to answer /healthz"}


class _StartProgress:
    """What `up` shows while it waits: the part it is starting, and model v1's epochs as a bar."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.task = bars.add_task("starting the local stack", total=None)
        self.training_task: TaskID | None = None

    def part(self, name: str) -> None:
        self.bars.update(self.task, description=f"waiting for {_WAITING_FOR.get(name, name)}")

    def training(self, record: dict[str, Any]) -> None:
        if self.training_task is None:
            self.training_task = self.bars.add_task("training model v1", total=record.get("epochs") or None)
        accuracy = record.get("accuracy")
        self.bars.update(self.training_task, completed=record.get("epoch", 0), description=(
            f"training model v1: epoch {record.get('epoch')}/{record.get('epochs')}, loss {record.get('loss')}"
            + (f", training accuracy {accuracy:.1%}" if isinstance(accuracy, int | float) else "")))


@app.command()
def up() -> None:
    """Start the local stack (Postgres, Temporal + UI, Ray, worker, API); returns when all are healthy.
    Run it again after a crash: it starts the parts that died and leaves the living ones alone."""
    stack = LocalStack(get_settings())
    if stack.first_start:
        # Measured on 2 cores: the standard profile's 10 epochs take about 4 minutes, the tiny one's about one;
        # the standard detector's 12 epochs about a minute, and the whole first start about 3 (2026-12-04).
        settings = get_settings()
        standard = settings.bootstrap_profile == "standard"
        takes = ("about 3 minutes" if settings.bootstrap_task == "detection" else "about 4 minutes") if standard \
            else "about a minute"
        what = "a detector" if settings.bootstrap_task == "detection" else "model v1"
        console.print(f"First start on {stack.root}: it creates the database and trains {what} on generated "
                      f"frames ({settings.bootstrap_profile} profile), {takes} on 2 cores; later starts take "
                      "well under a minute.")
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                      TimeElapsedColumn(), console=console) as bars:
            shown = _StartProgress(bars)
            parts = stack.up(progress=shown.part, training=shown.training)
            bars.update(shown.task, description="the local stack is up", total=1, completed=1)
    except (StackError, MigrationError) as exc:
        console.print(f"[red]the stack did not come up:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    _print_status(parts)


@app.command()
def down() -> None:
    """Stop every part of the local stack."""
    stopped = LocalStack(get_settings()).down()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status() -> None:
    """Show each part of the local stack with its URL and pid; for a part that is down or unhealthy, why
    (the end of its log); then the degraded cameras. Exits with 3 unless every part runs and answers."""
    parts = LocalStack(get_settings()).status()
    _print_status(parts)
    if any(p.name == "postgres" and p.healthy for p in parts):
        _print_camera_health()
    if not all(p.healthy for p in parts):
        raise typer.Exit(3)


def _print_camera_health() -> None:
    """Degraded cameras under the parts (maintenance, not part of the exit status)."""
    try:
        print_camera_health(console, database_url(get_settings()))
    except (RuntimeError, psycopg.Error) as exc:  # no database reachable: the parts' table said why
        console.print(f"cameras: not read ({escape(str(exc))})", highlight=False)


@app.command()
def migrate() -> None:
    """Apply the database migrations not yet applied (infra/migrations/, in name order), once; `up` runs
    this too. Fails, naming the file, when an applied migration was edited since."""
    try:
        applied = apply_migrations(database_url(get_settings()))
    except (RuntimeError, psycopg.OperationalError) as exc:  # a MigrationError, no database URL, none answering
        console.print(f"[red]the migrations were not applied:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}; "
                  "the database is at the latest migration", highlight=False)


app.add_typer(keys_app, name="keys")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(model_app, name="model")
app.command("camera")(camera_command)
app.command("demo")(demo_command)
app.command("retrain")(retrain_command)
app.command("trace")(trace_command)
app.add_typer(rollout_app, name="rollout")
app.add_typer(edge_app, name="edge")
app.add_typer(deletions_app, name="deletions")
app.add_typer(dataset_app, name="dataset")
app.add_typer(privacy_app, name="privacy")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
