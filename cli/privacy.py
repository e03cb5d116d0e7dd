"""`sightline privacy show|set`: a site's default or a camera's privacy settings, the same as
/v1/sites/{site}[/cameras/{camera}]/privacy, for an operator on the host (audited under the operating-system
user, acting as ops). Every change is a new revision; frames are redacted before they are stored."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from api.schemas.privacy import PrivacyRegion
from api.services.privacy import PrivacySettingsService, settings_of
from infra.db import Row, open_pool
from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.tables.api_keys import Principal
from infra.tables.audit_log import cli_actor

console = Console(width=None if Console().is_terminal else 200)
privacy_app = typer.Typer(help="Privacy settings: regions blurred or filled and faces blurred before frames are "
                               "stored.", no_args_is_help=True)
Site = Annotated[str, typer.Option("--site", help="the site")]
Camera = Annotated[str | None, typer.Option("--camera", help="one camera (default: the site's default)")]


def parse_region(text: str) -> dict[str, Any]:
    """`x0,y0,x1,y1[:mode]` (a rectangle) or `x,y;x,y;x,y[:mode]` (a polygon); mode blur (default) or fill."""
    shape, _, mode = text.partition(":")
    try:
        points = [[float(v) for v in point.split(",")] for point in shape.split(";")]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: numbers separated by ',' (and ';' between a polygon's points)") from None
    body: dict[str, Any] = {"mode": mode or "blur"}
    if len(points) == 1 and len(points[0]) == 4:
        body["rect"] = points[0]
    else:
        body["polygon"] = points
    try:
        return PrivacyRegion.model_validate(body).as_json()
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'region'}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(f"{text!r}: {reasons}") from None


def _describe(label: str, row: Row | None) -> None:
    if row is None:
        console.print(f"{label}: none")
        return
    regions = ", ".join(f"{r['mode']} {r.get('rect') or r.get('polygon')}" for r in row["regions"]) or "no regions"
    console.print(f"{label}: revision {row['revision']} ({row['site_id']}/{row['camera_id'] or 'site default'}): "
                  f"faces {'on' if row['faces'] else 'off'}, {regions}; by {row['changed_by']} at "
                  f"{row['created_at']:%Y-%m-%d %H:%M:%S}{' (' + row['reason'] + ')' if row['reason'] else ''}")


async def _with_service(work: Any) -> Any:
    async with open_pool(database_url(get_settings()), max_size=2) as pool:
        return await work(PrivacySettingsService(pool))


@privacy_app.command("show")
def show(site: Site, camera: Camera = None) -> None:
    """The settings of a site's default or of a camera, and what is in force for it."""
    own, effective = asyncio.run(_with_service(lambda service: service.read(site, camera)))
    _describe("own" if camera else "site default", own)
    if camera:
        _describe("in force", effective)
    console.print("frames are redacted before they are stored" if settings_of(effective) is not None
                  else "frames are stored as received")


@privacy_app.command("set")
def set_settings(
    site: Site,
    camera: Camera = None,
    faces: Annotated[bool, typer.Option("--faces/--no-faces", help="blur faces")] = False,
    region: Annotated[list[str] | None, typer.Option(
        "--region", help="x0,y0,x1,y1[:blur|fill] or x,y;x,y;x,y[:blur|fill], relative (0..1); repeatable")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit log")] = "",
) -> None:
    """Replace the settings (a new revision; the same settings again change nothing)."""
    regions = [parse_region(r) for r in region or []]
    operator = Principal(key_id="cli", name=cli_actor(), role="ops")
    row, created = asyncio.run(_with_service(
        lambda service: service.put(site, camera, faces, regions, reason, operator)))
    _describe("new revision" if created else "unchanged", row)
