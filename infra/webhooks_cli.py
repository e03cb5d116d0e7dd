"""`sightline webhooks`: register webhook URLs and hand their signing secrets to the receivers.

`create --url U` is how a receiver learns its secret: it prints the URL's secret, creating the
subscription if the URL is new (a URL first seen with a batch already has one; this shows it).
"""

from __future__ import annotations

import asyncio

import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Column, Table

from infra.db import apply_migrations
from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.tables.audit_log import append_audit, cli_actor
from infra.tables.webhook_subscriptions import ensure_subscription, list_subscriptions, rotate_secret, set_disabled

webhooks_app = typer.Typer(help="Webhook subscriptions: create (prints the signing secret), list, rotate, disable.",
                           no_args_is_help=True)
console = Console()


async def _run(fn, *args):
    url = database_url(get_settings())
    apply_migrations(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return await fn(conn, *args)


async def _audited(conn, fn, action: str, *args):
    """Run a subscription change and its audit row in one transaction."""
    async with conn.transaction():
        result = await fn(conn, *args)
        subscription = result[0] if isinstance(result, tuple) else result
        if subscription is not None and (not isinstance(result, tuple) or result[1]):
            await append_audit(conn, key_id=None, key_name=cli_actor(), role=None, action=action,
                               resource=f"webhook_subscriptions/{subscription.subscription_id}",
                               details={"url": subscription.url})
    return result


def _print_secret(subscription) -> None:
    console.print(f"subscription: {subscription.subscription_id}  url: {subscription.url}", highlight=False)
    console.print("signing secret (verify X-Sightline-Signature = sha256=HMAC-SHA256(secret, raw body)):", style="bold")
    print(subscription.secret)  # plain print: never wrapped, easy to copy or pipe


@webhooks_app.command("create")
def create(url: str = typer.Option(..., "--url", help="the receiver's http(s) URL")) -> None:
    """Register a URL (or find its subscription) and print its signing secret."""
    try:
        subscription, created = asyncio.run(_run(_audited, ensure_subscription, "webhook.create", url))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--url") from None
    if not created:
        console.print("this URL was already registered; its current secret:", style="yellow")
    _print_secret(subscription)


@webhooks_app.command("list")
def list_() -> None:
    """List subscriptions (without secrets)."""
    table = Table(Column("subscription", no_wrap=True), "url", "created", "rotated", "disabled")
    fmt = lambda t: t.strftime("%Y-%m-%d %H:%M") if t else "-"  # noqa: E731
    for s in asyncio.run(_run(list_subscriptions)):
        table.add_row(s.subscription_id, s.url, fmt(s.created_at), fmt(s.rotated_at), fmt(s.disabled_at))
    console.print(table)


@webhooks_app.command("rotate")
def rotate(subscription_id: str) -> None:
    """Replace a subscription's secret and print the new one; the next attempt of every delivery uses it."""
    subscription = asyncio.run(_run(_audited, rotate_secret, "webhook.rotate", subscription_id))
    if subscription is None:
        console.print(f"no subscription {subscription_id!r}", style="red")
        raise typer.Exit(1)
    _print_secret(subscription)


@webhooks_app.command("disable")
def disable(subscription_id: str, enable: bool = typer.Option(False, "--enable", help="re-enable instead")) -> None:
    """Stop deliveries to a subscription: pending ones fail at their next attempt without retrying."""
    action = "webhook.enable" if enable else "webhook.disable"
    if asyncio.run(_run(_audited, set_disabled, action, subscription_id, not enable)) is None:
        console.print(f"no subscription {subscription_id!r}", style="red")
        raise typer.Exit(1)
    console.print(f"{'enabled' if enable else 'disabled'} {subscription_id}")
