"""`sightline deletions verify <id>`: prove that nothing of a deletion's frames remains (issue 24).

Walks the object store and every table of the database for the ids, sha256 digests and object keys of the
frames the deletion named (activities.deletion_verifier) and prints what it checked and anything left. Exit
status 0 when nothing remains, 1 when something does, 2 when there is no such deletion.
"""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.markup import escape

from activities.deletion_verifier import VerificationReport, verify_deletion
from cli.database import migrated_database_url
from infra.db import open_pool
from infra.settings import get_settings
from infra.store import store_from_settings
from infra.tables import deletions

deletions_app = typer.Typer(help="Deletion requests: verify that a deletion left nothing behind.",
                            no_args_is_help=True)
console = Console()


async def _verify(deletion_id: str) -> VerificationReport | None:
    store = store_from_settings(get_settings())
    async with open_pool(migrated_database_url(), min_size=1, max_size=2) as pool:
        async with pool.connection() as conn:
            if await deletions.get(conn, deletion_id) is None:
                return None
        return await verify_deletion(pool, store, deletion_id)


@deletions_app.command("verify")
def verify_command(deletion_id: str = typer.Argument(..., help="deletion:<site>:<request id>"),
                   as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Walk the store and every table: nothing of the deletion's frames may remain."""
    report = asyncio.run(_verify(deletion_id))
    if report is None:
        console.print(f"[red]no deletion {escape(deletion_id)}[/red]")
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
    else:
        console.print(f"deletion {escape(deletion_id)}: {report.frames} frames named; checked "
                      f"{report.checked_tables} tables and {report.checked_objects} store objects")
        if report.shared:
            console.print(f"{report.shared} digests are another, kept frame's too (the same bytes sent again)")
        for snapshot in report.marked:
            console.print(f"snapshot {escape(snapshot)} names them and is marked with this deletion")
        for leftover in report.leftovers:
            console.print(f"[red]left: {escape(leftover)}[/red]")
        console.print("[green]nothing remains[/green]" if report.ok else "[red]something remains[/red]")
    raise typer.Exit(0 if report.ok else 1)
