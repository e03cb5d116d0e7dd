"""`sightline model bootstrap|list|promote|history|sign`: the model registry from the command line."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from cli.database import migrated_database_url

if TYPE_CHECKING:
    from infra.store import ObjectStore
    from vision.registry import ModelRegistry

console = Console()
model_app = typer.Typer(help="The model registry: train the first version, list versions, move aliases.",
                        no_args_is_help=True)


def _registry_and_store() -> tuple[ModelRegistry, ObjectStore]:
    from infra.settings import get_settings
    from infra.store import store_from_settings
    from vision.registry import ModelRegistry

    return ModelRegistry(migrated_database_url()), store_from_settings(get_settings())


@model_app.command("bootstrap")
def bootstrap_command(
    architecture: str = typer.Option("mobilenet_v3_small", help="mobilenet_v3_small or resnet18"),
    input_size: int = typer.Option(128, min=32),
    epochs: int = typer.Option(10, min=1),
    train_frames: int = typer.Option(3200, min=16),
    eval_frames: int = typer.Option(800, min=16),
    seed: int = typer.Option(0),
    time_budget: float = typer.Option(270.0, help="seconds of training before it stops early"),
    promote: bool = typer.Option(True, help="make it production when no production model exists"),
    task: str = typer.Option("classification", help="classification, or detection: the detector of "
                             "vision.detector_training (its standard profile: 1-2 minutes on 2 idle cores)"),
    detector_profile: str = typer.Option("standard", help="with --task detection: standard or tiny"),
) -> None:
    """Train a model on generated frames on the CPU, register it, and report held-out accuracy (or mAP)."""
    from vision.detector_training import DETECTOR_PROFILES, DetectorConfig
    from vision.publishing import bootstrap
    from vision.training import TrainingConfig

    if task not in ("classification", "detection"):
        raise typer.BadParameter("classification or detection", param_hint="--task")
    if task == "detection" and detector_profile not in DETECTOR_PROFILES:
        raise typer.BadParameter(f"one of {', '.join(sorted(DETECTOR_PROFILES))}", param_hint="--detector-profile")
    registry, store = _registry_and_store()
    config: TrainingConfig | DetectorConfig = (
        DETECTOR_PROFILES[detector_profile] if task == "detection" else
        TrainingConfig(architecture=architecture, input_size=input_size, epochs=epochs, train_frames=train_frames,
                       eval_frames=eval_frames, seed=seed, time_budget_s=time_budget))
    started = time.monotonic()
    version = bootstrap(registry, store, config, promote=promote,
                        progress=lambda p: console.print(f"epoch {p['epoch']}/{p['epochs']} loss {p['loss']} "
                                                         f"({p['elapsed_s']}s)"))
    m = version.metrics
    if task == "detection":
        by_class = ", ".join(f"{c} {ap:.3f}" for c, ap in m["held_out_ap50_by_class"].items())
        console.print(f"registered {version.version} (detector, {config.input_size}px) in "
                      f"{time.monotonic() - started:.0f}s; aliases: {', '.join(version.aliases) or 'none'}")
        console.print(f"held-out mAP@0.5: {m['held_out_map_50']:.4f} on {m['held_out_frames']} frames "
                      f"(AP@0.5 by class: {by_class})")
        return
    console.print(f"registered {version.version} ({architecture}, {input_size}px) in "
                  f"{time.monotonic() - started:.0f}s; aliases: {', '.join(version.aliases) or 'none'}")
    console.print(f"held-out accuracy: {m['held_out_accuracy']:.4f} on {m['held_out_frames']} frames "
                  f"(per class: {m['held_out_per_class_accuracy']})")
    if m.get("stopped_early"):
        console.print(f"[yellow]training stopped early at the {time_budget:.0f}s budget "
                      f"after {m['steps']} steps[/yellow]")


@model_app.command("list")
def list_command() -> None:
    """Registered model versions with their aliases and held-out accuracy."""
    registry, _ = _registry_and_store()
    table = Table("version", "architecture", "aliases", "held-out accuracy", "parent", "dataset", "created")
    for v in registry.list_versions():
        acc, held_out_map = v.metrics.get("held_out_accuracy"), v.metrics.get("held_out_map_50")
        score = f"{acc:.4f}" if acc is not None else f"mAP@0.5 {held_out_map:.4f}" if held_out_map is not None else "-"
        table.add_row(v.version, v.architecture, ", ".join(v.aliases), score,
                      v.parent_version or "-", v.dataset_snapshot_id or "-",
                      v.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)


@model_app.command("promote")
def promote_command(
    version: str = typer.Argument(..., help="the version to point the alias at, e.g. v2"),
    alias: str = typer.Option("production", help="production, candidate or shadow"),
    reason: str = typer.Option("manual promotion", help="recorded in the alias history"),
) -> None:
    """Point an alias at a version; the change is recorded in the alias history."""
    import getpass

    from vision.registry import ModelNotFound

    registry, _ = _registry_and_store()
    try:
        previous = registry.set_alias(alias, version, changed_by=getpass.getuser(), reason=reason)
    except (ModelNotFound, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{alias}: {previous or 'unset'} -> {version}")


@model_app.command("history")
def history_command(alias: str = typer.Option(None, help="only this alias")) -> None:
    """Every alias change, oldest first."""
    registry, _ = _registry_and_store()
    table = Table("when", "alias", "from", "to", "by", "reason")
    for c in registry.alias_history(alias):
        table.add_row(c.changed_at.strftime("%Y-%m-%d %H:%M:%S"), c.alias, c.from_version or "-", c.to_version or "-",
                      c.changed_by, c.reason)
    console.print(table)


@model_app.command("sign")
def sign_command(version: str = typer.Argument(..., help="a version published before manifests were signed")) -> None:
    """Sign a version's manifest with the configured key (SIGHTLINE_MODEL_SIGNING_KEY or the data dir's):
    serving refuses versions without a valid signature. Its manifest must still match the registry."""
    from infra.settings import get_settings
    from vision.artifacts import IntegrityError, sign_existing
    from vision.signatures import signer_from_settings

    registry, store = _registry_and_store()
    row = registry.get(version)
    if row is None:
        console.print(f"[red]no model version {version!r}[/red]")
        raise typer.Exit(1)
    try:
        key_id = sign_existing(store, row.manifest_key, row.manifest_sha256, signer_from_settings(get_settings()))
    except IntegrityError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    registry.set_signature_key(version, key_id)
    console.print(f"signed {version} with key {key_id}")
