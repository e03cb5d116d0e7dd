"""`sightline dataset export` and `sightline dataset import`: the same as GET /v1/datasets/{snapshot}/export
and POST /v1/datasets/import, run against the stack's database and store as the operator at the terminal
(unscoped, audited as `cli:<user>`). YOLO is written as a zip (an --out ending in .zip) or as a directory
of label files and classes.txt."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import typer
from rich.console import Console

from api.services.dataset_exchange import DatasetExchange, SnapshotNotFound
from infra.db import open_pool
from infra.settings import Settings, get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.tables.api_keys import Principal
from infra.tables.audit_log import cli_actor
from vision.boxes import BoxError

console = Console(width=None if Console().is_terminal else 200)
dataset_app = typer.Typer(help="Export a dataset snapshot's boxes (COCO, YOLO); import COCO boxes as labels.",
                          no_args_is_help=True)


def _operator() -> Principal:
    return Principal(cli_actor(), cli_actor(), "admin")


def write_export(body: bytes, fmt: str, out: Path) -> list[Path]:
    """The export at `out`: COCO JSON as one file; YOLO as the zip itself (out ending in .zip) or
    unpacked into the directory `out`. The paths written."""
    if fmt == "coco" or out.suffix == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(body)
        return [out]
    written = []
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in archive.namelist():
            target = (out / name).resolve()
            if not target.is_relative_to(out.resolve()):  # our own zip never does this; refuse anyway
                raise ValueError(f"{name} would leave {out}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
            written.append(target)
    return written


async def _export(settings: Settings, snapshot_id: str, fmt: str, out: Path, generated: bool) -> int:
    async with open_pool(database_url(settings), max_size=2) as pool:
        try:
            export = await DatasetExchange(pool, store_from_settings(settings)).export(
                snapshot_id, _operator(), fmt, generated)
        except SnapshotNotFound:
            console.print(f"[red]no dataset snapshot {snapshot_id!r}[/red]")
            return 1
    written = write_export(export.body, fmt, out)
    console.print(f"{fmt}: {export.images} images, {export.boxes} boxes -> {out}"
                  + (f" ({len(written)} files)" if len(written) > 1 else ""))
    return 0


async def _import(settings: Settings, path: Path) -> int:
    async with open_pool(database_url(settings), max_size=2) as pool:
        try:
            result = await DatasetExchange(pool, store_from_settings(settings)).import_coco(
                path.read_bytes(), _operator())
        except BoxError as exc:
            console.print(f"[red]{path}: {exc}[/red]")
            return 2
    verb = "imported" if result.created else "already imported; nothing changed:"
    console.print(f"{verb} {result.import_id}: {result.labelled_frames} frames labelled from {result.images} images,"
                  f" {result.annotations} boxes; {result.unmatched_count} images matched no frame")
    return 0


@dataset_app.command("export")
def export_command(
    snapshot_id: str = typer.Argument(..., help="a dataset snapshot id (snap-...)"),
    fmt: str = typer.Option("coco", "--format", help="coco or yolo"),
    out: Path = typer.Option(None, "--out", help="default: <snapshot>-<format>.json, or a directory for yolo"),
    generated: bool = typer.Option(False, "--generated", help="also the generated base set with its drawn boxes"),
) -> None:
    """A snapshot's frames and boxes as COCO JSON or YOLO text."""
    if fmt not in ("coco", "yolo"):
        console.print("[red]--format must be coco or yolo[/red]")
        raise typer.Exit(2)
    target = out or Path(f"{snapshot_id}-{fmt}" + (".json" if fmt == "coco" else ""))
    raise typer.Exit(asyncio.run(_export(get_settings(), snapshot_id, fmt, target, generated)))


@dataset_app.command("import")
def import_command(path: Path = typer.Argument(..., exists=True, dir_okay=False, help="a COCO JSON file")) -> None:
    """COCO boxes as reviewed labels (images matched to frames by sha256); the same file twice is a no-op."""
    raise typer.Exit(asyncio.run(_import(get_settings(), path)))
