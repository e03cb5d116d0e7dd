"""`sightline keys`: create, list and revoke API keys. A new key is printed once and stored only hashed."""

from __future__ import annotations

import asyncio

import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Column, Table

from cli.database import migrated_database_url
from infra.tables.api_keys import ROLES, create_key, list_keys, revoke_key
from infra.tables.audit_log import append_audit, cli_actor

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
console = Console()


async def _run(fn, *args):
    url = migrated_database_url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return await fn(conn, *args)


async def _create_audited(conn, name: str, role: str, sites: list[str], cameras: list[str]):
    async with conn.transaction():  # no key without its audit row
        created = await create_key(conn, name, role, site_ids=sites, camera_ids=cameras)
        await append_audit(conn, key_id=None, key_name=cli_actor(), role=None, action="api_key.create",
                           resource=f"api_keys/{created.key_id}",
                           details={"name": name, "role": role, "site_ids": list(created.site_ids),
                                    "camera_ids": list(created.camera_ids)})
    return created


async def _revoke_audited(conn, key_id: str) -> bool:
    async with conn.transaction():
        revoked = await revoke_key(conn, key_id)
        if revoked:
            await append_audit(conn, key_id=None, key_name=cli_actor(), role=None, action="api_key.revoke",
                               resource=f"api_keys/{key_id}")
    return revoked


def _scope(sites: tuple[str, ...], cameras: tuple[str, ...]) -> str:
    parts = [f"sites {', '.join(sites)}" if sites else "", f"cameras {', '.join(cameras)}" if cameras else ""]
    return "; ".join(p for p in parts if p) or "all"


@keys_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="who holds the key, e.g. 'line-1 backend'"),
    role: str = typer.Option(..., "--role", help=f"one of: {', '.join(ROLES)}"),
    sites: list[str] = typer.Option([], "--site", help="limit the key to this site (repeat for several)"),
    cameras: list[str] = typer.Option([], "--camera", help="limit the key to this camera (repeat for several)"),
) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored. With --site or
    --camera the key sees and acts on those sites' and cameras' batches, frames and reviews only."""
    if role not in ROLES:
        raise typer.BadParameter(f"unknown role {role!r}: use one of {', '.join(ROLES)}", param_hint="--role")
    try:
        created = asyncio.run(_run(_create_audited, name, role, sites, cameras))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"key id: {created.key_id}  name: {created.name}  role: {created.role}  scope: "
                  f"{_scope(created.site_ids, created.camera_ids)}", highlight=False, soft_wrap=True)
    console.print("store this key now; it cannot be shown again:", style="bold")
    # Plain print: rich would wrap a long key and break copy-paste.
    print(created.raw_key)


@keys_app.command("list")
def list_(include_revoked: bool = typer.Option(True, "--all/--active", help="include revoked keys")) -> None:
    """List keys (never their secrets)."""
    keys = asyncio.run(_run(list_keys, include_revoked))
    # Ids and roles are copied into other commands: never wrap them.
    table = Table(Column("key id", no_wrap=True), "name", Column("role", no_wrap=True), "scope", "created",
                  "last used", "revoked")
    fmt = lambda t: t.strftime("%Y-%m-%d %H:%M") if t else "-"  # noqa: E731
    for k in keys:
        table.add_row(k.key_id, k.name, k.role, _scope(k.site_ids, k.camera_ids), fmt(k.created_at),
                      fmt(k.last_used_at), fmt(k.revoked_at))
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="the key id shown by `create` and `list`")) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    if not asyncio.run(_run(_revoke_audited, key_id)):
        console.print(f"no active key {key_id!r}", style="red")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")
