"""`sightline webhooks`: register webhook URLs and hand their signing secrets to the receivers.

`create --url U --site S` registers U for site S's batches (a batch may name only a URL registered for
its site) and prints the secret the receiver verifies with; without --site the URL is set up for the
operator's own settings (review escalations, drift) and batches cannot name it. Either way the URL's
host must resolve to public addresses (or to a network in SIGHTLINE_WEBHOOK_ALLOWED_NETWORKS).
`rotate` replaces the secret; deliveries carry both signatures for an overlap window.
"""

from __future__ import annotations

import asyncio

import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Column, Table

from cli.database import migrated_database_url
from infra.outbound_addresses import AddressPolicy, checked_addresses
from infra.settings import get_settings
from infra.tables.audit_log import append_audit, cli_actor
from infra.tables.webhook_subscriptions import (
    ensure_subscription,
    list_subscriptions,
    register_webhook,
    rotate_secret,
    set_disabled,
    validate_webhook_url,
)

webhooks_app = typer.Typer(help="Webhook subscriptions: create (prints the signing secret), list, rotate, disable.",
                           no_args_is_help=True)
console = Console()


async def _run(fn, *args):
    url = migrated_database_url()
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
                               details={"url": subscription.url, "site_id": subscription.site_id})
    return result


def _policy() -> AddressPolicy:
    return AddressPolicy.allowing(get_settings().webhook_allowed_networks)


async def _register(conn, url: str, site: str):
    return await register_webhook(conn, url, site, _policy())


async def _set_up_unbound(conn, url: str):
    """A subscription for a URL of the operator's settings: address checked, bound to no site."""
    await checked_addresses(validate_webhook_url(url), _policy())
    return await ensure_subscription(conn, url)


def _print_secret(subscription) -> None:
    console.print(f"subscription: {subscription.subscription_id}  url: {subscription.url}", highlight=False)
    console.print("signing secret (verify X-Sightline-Signature = sha256=HMAC-SHA256(secret, raw body)):", style="bold")
    print(subscription.secret)  # plain print: never wrapped, easy to copy or pipe


@webhooks_app.command("create")
def create(
    url: str = typer.Option(..., "--url", help="the receiver's http(s) URL"),
    site: str = typer.Option("", "--site", help="the site whose batches may name this URL"),
) -> None:
    """Register a URL for a site's batches (or find its subscription) and print its signing secret."""
    try:
        if site:
            subscription, created = asyncio.run(_run(_audited, _register, "webhook.create", url, site))
        else:
            subscription, created = asyncio.run(_run(_audited, _set_up_unbound, "webhook.create", url))
    except ValueError as exc:  # a malformed URL, a refused address, another site's URL
        raise typer.BadParameter(str(exc), param_hint="--url") from None
    if not created:
        console.print("this URL was already registered; its current secret:", style="yellow")
    if not subscription.site_id:
        console.print("bound to no site: for the operator's settings (escalations, drift); batches cannot name it"
                      " until it is registered with --site", style="yellow")
    _print_secret(subscription)


@webhooks_app.command("list")
def list_() -> None:
    """List subscriptions (without secrets)."""
    table = Table(Column("subscription", no_wrap=True), "url", Column("site", no_wrap=True), "created", "rotated",
                  "disabled")
    fmt = lambda t: t.strftime("%Y-%m-%d %H:%M") if t else "-"  # noqa: E731
    for s in asyncio.run(_run(list_subscriptions)):
        table.add_row(s.subscription_id, s.url, s.site_id or "-", fmt(s.created_at), fmt(s.rotated_at),
                      fmt(s.disabled_at))
    console.print(table)


@webhooks_app.command("rotate")
def rotate(
    subscription_id: str,
    overlap_hours: float = typer.Option(-1, "--overlap-hours", help="how long the old secret signs too"
                                        " (default: SIGHTLINE_WEBHOOK_SECRET_OVERLAP_S); 0 drops it at once"),
) -> None:
    """Replace a subscription's secret and print the new one. Deliveries are signed with both for the
    overlap window (a leaked secret: --overlap-hours 0)."""
    overlap_s = overlap_hours * 3600 if overlap_hours >= 0 else get_settings().webhook_secret_overlap_s
    subscription = asyncio.run(_run(_audited, rotate_secret, "webhook.rotate", subscription_id, overlap_s))
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
