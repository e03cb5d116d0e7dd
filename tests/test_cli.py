"""The `sightline` command line: every command is there, a command module that fails to import fails the
command line instead of vanishing from it, and `sightline migrate` applies what is missing."""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
import uuid
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from infra.schema_migrations import migration_files

COMMANDS = ("up", "down", "status", "migrate", "keys", "webhooks", "model", "camera", "demo", "retrain", "rollout",
            "edge", "dataset", "trace")
GROUPS = {"keys": {"create", "list", "revoke"}, "webhooks": {"create", "list", "rotate", "disable"},
          "model": {"bootstrap", "list", "promote", "history", "sign"},
          "rollout": {"start", "list", "show", "approve", "pause", "resume", "abort", "rollback"},
          "dataset": {"export", "import"}}


def _listed(help_text: str) -> set[str]:
    """The names in the first column of help's panels (a wrapped description starts further right)."""
    return {m.group(1) for m in re.finditer(r"^│ (\S+) ", help_text, re.MULTILINE)}


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    missing = set(COMMANDS) - _listed(result.output)
    assert not missing, f"`sightline --help` lacks {sorted(missing)}:\n{result.output}"


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_lists_its_commands(group):
    result = CliRunner().invoke(app, [group, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert GROUPS[group] <= _listed(result.output), result.output


def test_the_entry_point_is_the_root_app():
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sightline"] == "cli.main:main"
    assert set(COMMANDS) <= set(typer.main.get_group(app).commands)


def test_a_command_module_that_fails_to_import_fails_the_command_line(monkeypatch):
    # The case the mount by module name used to swallow: a ModuleNotFoundError naming the module itself.
    monkeypatch.delitem(sys.modules, "cli.main")
    monkeypatch.setitem(sys.modules, "cli.webhooks", None)
    with pytest.raises(ImportError, match=r"cli\.webhooks"):
        importlib.import_module("cli.main")


def test_migrate_applies_what_is_missing_then_nothing(postgres_url, monkeypatch):
    from infra.settings import get_settings

    base, _, _ = postgres_url.rpartition("/")
    name = f"cli_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", f"{base}/{name}")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(app, ["migrate"], env={"COLUMNS": "400"})
        assert first.exit_code == 0, first.output
        assert f"applied {len(migration_files())} migration(s)" in first.output
        again = runner.invoke(app, ["migrate"], env={"COLUMNS": "400"})
        assert again.exit_code == 0 and "applied 0 migration(s)" in again.output, again.output
    finally:
        get_settings.cache_clear()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
