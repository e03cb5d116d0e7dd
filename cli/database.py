"""The database a command works on, checked to be at the latest migration before it is used."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from infra.schema_migrations import MigrationError, require_migrated
from infra.settings import get_settings
from infra.stack_urls import database_url

console = Console(stderr=True)


def migrated_database_url() -> str:
    """The configured (or local stack's) database URL; exits with the reason and what to run when the
    database is not at the latest migration. Commands never migrate it themselves: `sightline migrate` does."""
    url = database_url(get_settings())
    try:
        require_migrated(url)
    except MigrationError as exc:
        console.print(f"[red]{escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(1) from None
    return url
