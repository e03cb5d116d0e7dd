"""`sightline rollout start|list|show|approve|pause|resume|abort|rollback`: the same as /v1/rollouts, for an
operator on the host (recorded in the audit log under the operating-system user, acting as an ML engineer).
`start --follow` and `show --follow` print each stage and its gates as the rollout goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from api.services.rollouts import ACTIONS, RolloutRefused, RolloutService
from infra.db import open_pool
from infra.settings import Settings, get_settings
from infra.stack_urls import database_url
from infra.tables.api_keys import Principal
from infra.tables.audit_log import cli_actor
from infra.temporal import connect
from vision.registry import ModelRegistry
from workflows.rollout_types import FINISHED, RolloutState

console = Console(width=None if Console().is_terminal else 200)
rollout_app = typer.Typer(help="Roll a model version out: shadow, canary steps, gates, promotion.",
                          no_args_is_help=True)


def _operator() -> Principal:
    return Principal(key_id="cli", name=cli_actor(), role="ml-engineer")


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[RolloutService]:
    url = database_url(settings)
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    async with open_pool(url, max_size=2) as pool:
        yield RolloutService(pool, client, settings, ModelRegistry(url))


def describe(state: RolloutState) -> str:
    split = ", ".join(f"{v} {share:.0%}" for v, share in state.split.items())
    shadow = f", shadow {state.shadow_share:.0%}" if state.shadow_share else ""
    current = f", {state.current.frames} frames so far" if state.current and state.status == "running" else ""
    return f"{state.rollout_id}: {state.status} at {state.stage} ({split}{shadow}{current})"


def gate_table(state: RolloutState) -> Table:
    table = Table("stage", "passed", "frames", "checks", title=f"gates of {state.rollout_id}")
    for gate in state.gates:
        checks = "; ".join(f"{c.name} {c.value:.3g} {'<=' if c.name != 'agreement' else '>='} {c.limit:.3g}"
                           + ("" if c.passed else " FAILED") for c in gate.checks if c.value is not None)
        table.add_row(gate.stage, "yes" if gate.passed else "[red]no[/red]", str(gate.metrics.frames), checks)
    return table


async def follow(service: RolloutService, rollout_id: str, poll_s: float = 1.0,
                 on_change: Callable[[RolloutState], Awaitable[None]] | None = None) -> RolloutState | None:
    """Print each change of stage or status until the rollout finishes; its last state."""
    seen = ""
    state: RolloutState | None = None
    while True:
        state = await service.state(rollout_id) or state
        if state is not None:
            line = describe(state)
            key = f"{state.status}/{state.stage}/{len(state.gates)}"
            if key != seen:
                seen = key
                console.print(line)
                if on_change is not None:
                    await on_change(state)
            if state.status in FINISHED:
                return state
        await asyncio.sleep(poll_s)


def _run(work: Callable[[RolloutService], Awaitable[int]]) -> None:
    async def main() -> int:
        async with _service(get_settings()) as service:
            try:
                return await work(service)
            except RolloutRefused as exc:
                console.print(f"[red]refused ({exc.status}): {exc.reason}[/red]")
                return 2

    raise typer.Exit(asyncio.run(main()))


def _thresholds(pairs: list[str]) -> dict[str, float] | None:
    """`--threshold name=value` options as the plan's threshold overrides (None: the settings' own);
    an unknown name is refused by the plan itself, with the names it knows."""
    found: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            found[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{pair!r}: expected NAME=NUMBER", param_hint="--threshold") from None
    return found or None


@rollout_app.command("start")
def start(candidate: str = typer.Argument(..., help="the version to roll out, e.g. v2"),
          reason: str = typer.Option("", "--reason"),
          shadow_share: float = typer.Option(None, "--shadow-share", min=0.0, max=1.0),
          canary: list[float] = typer.Option(None, "--canary", help="a canary share; repeat for steps"),
          min_frames: int = typer.Option(None, "--min-frames", min=1),
          min_duration_s: float = typer.Option(None, "--min-duration-s", min=0.0),
          poll_interval_s: float = typer.Option(None, "--poll-interval-s", min=0.1,
                                                help="how often a stage's figures are read"),
          threshold: list[str] = typer.Option(None, "--threshold", metavar="NAME=VALUE",
                                              help="a gate threshold to change, e.g. min_agreement=0.6; repeatable"),
          require_approval: bool = typer.Option(None, "--require-approval/--no-approval"),
          wait: bool = typer.Option(False, "--follow", help="print stages and gates until it finishes")) -> None:
    """Start a rollout of CANDIDATE with the settings' plan (options override it)."""
    overrides: dict[str, Any] = {"shadow_share": shadow_share, "canary_steps": canary or None,
                                 "min_frames": min_frames, "min_duration_s": min_duration_s,
                                 "poll_interval_s": poll_interval_s, "require_approval": require_approval,
                                 "thresholds": _thresholds(threshold or [])}

    async def work(service: RolloutService) -> int:
        rollout_id = await service.start(candidate, overrides, _operator(), cli_actor(), reason)
        console.print(f"rollout started: {rollout_id}")
        console.print(f"history: {service.settings.workflow_ui_url(rollout_id)}")
        if not wait:
            return 0
        state = await follow(service, rollout_id)
        if state is not None:
            console.print(gate_table(state))
        return 0 if state is not None and state.status == "promoted" else 1

    _run(work)


@rollout_app.command("list")
def list_rollouts(status: str = typer.Option(None, "--status"), limit: int = typer.Option(20, "--limit")) -> None:
    """Rollouts, newest first."""

    async def work(service: RolloutService) -> int:
        table = Table("rollout", "candidate", "previous", "status", "stage", "reason", "started")
        for row in await service.listing(status, limit, 0):
            table.add_row(row["rollout_id"], row["candidate_version"], row["previous_version"] or "-", row["status"],
                          row["stage"], (row["reason"] or "")[:60], f"{row['started_at']:%Y-%m-%d %H:%M:%S}")
        console.print(table)
        return 0

    _run(work)


@rollout_app.command("show")
def show(rollout_id: str, wait: bool = typer.Option(False, "--follow")) -> None:
    """A rollout's stage, split and gates so far."""

    async def work(service: RolloutService) -> int:
        row, state = await service.get(rollout_id)
        if wait:
            state = await follow(service, rollout_id)
        if state is None:
            assert row is not None
            console.print(f"{rollout_id}: {row['status']} at {row['stage']} ({row['reason'] or ''})")
            return 0
        console.print(describe(state))
        if state.reason:
            console.print(f"reason: {state.reason}")
        console.print(gate_table(state))
        console.print(f"history: {service.settings.workflow_ui_url(rollout_id)}")
        return 0

    _run(work)


def _action_command(action: str) -> None:
    def command(rollout_id: str, reason: str = typer.Option("", "--reason")) -> None:
        async def work(service: RolloutService) -> int:
            console.print(describe(await service.act(rollout_id, action, _operator(), reason)))
            return 0

        _run(work)

    command.__doc__ = f"{action.capitalize()} a running rollout."
    rollout_app.command(action)(command)


for _action in ACTIONS:
    _action_command(_action)
