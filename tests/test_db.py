"""Migrations: ordered, applied once each by one runner at a time, held to the sha256 of their files,
adopted from the runner before yoyo; every other process refuses a database that is behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from infra.schema_migrations import (
    APPLIED_TABLE,
    CHECKSUM_TABLE,
    DatabaseNotMigrated,
    MigrationEdited,
    MigrationError,
    apply_migrations,
    migration_files,
    require_migrated,
)
from infra.settings import Settings

NAMES = [f.name for f in migration_files()]


@pytest.fixture
def fresh_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the test server."""
    base, _, _ = postgres_url.rpartition("/")
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the migration files, to edit and add to without touching the real ones."""
    copy = tmp_path / "migrations"
    copy.mkdir()
    for f in migration_files():
        shutil.copy(f.path, copy / f.path.name)
    return copy


def _applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT migration_id FROM {APPLIED_TABLE} ORDER BY migration_id")]


def _has_table(url: str, table: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() == (True,)


def test_migration_files_are_ordered_and_numbered():
    assert sorted(NAMES) == NAMES
    assert all(name[:4].isdigit() and name[4] == "_" for name in NAMES)
    assert len({name[:4] for name in NAMES}) == len(NAMES), "two migrations share a number"


def test_migrations_apply_once_each_with_their_checksums(fresh_url):
    assert apply_migrations(fresh_url) == NAMES
    assert apply_migrations(fresh_url) == []  # a second run finds nothing to do
    assert _applied(fresh_url) == NAMES
    with psycopg.connect(fresh_url) as conn:
        stored = {r[0]: r[1] for r in conn.execute(f"SELECT migration_id, sha256 FROM {CHECKSUM_TABLE}")}
    assert stored == {f.name: f.sha256 for f in migration_files()}
    require_migrated(fresh_url)  # at the latest migration: a process may start


def test_concurrent_runners_apply_each_migration_once(fresh_url):
    code = f"from infra.schema_migrations import apply_migrations; print(len(apply_migrations({fresh_url!r})))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    applied = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(applied) == [0, 0, 0, len(NAMES)]  # one runner did the work, the others found it done
    assert _applied(fresh_url) == NAMES
    assert apply_migrations(fresh_url) == []


def test_new_files_are_picked_up_in_name_order(fresh_url, folder):
    apply_migrations(fresh_url, folder)
    (folder / "9001_second.sql").write_text("ALTER TABLE migrate_probe ADD COLUMN note text;\n")
    (folder / "9000_first.sql").write_text("-- a comment first, as ours have\nCREATE TABLE migrate_probe (id int);\n")
    with pytest.raises(DatabaseNotMigrated, match=r"2 of \d+ not applied \(9000_first, 9001_second\)"):
        require_migrated(fresh_url, folder)
    assert apply_migrations(fresh_url, folder) == ["9000_first", "9001_second"]
    require_migrated(fresh_url, folder)


def test_an_edited_applied_migration_fails_naming_the_file(fresh_url, folder):
    apply_migrations(fresh_url, folder)
    edited = folder / "0003_auth_audit.sql"
    edited.write_text(edited.read_text() + "\nCREATE INDEX audit_log_action ON audit_log (action);\n")
    (folder / "9000_new.sql").write_text("CREATE TABLE migrate_probe (id int);\n")
    with pytest.raises(MigrationEdited, match=r"0003_auth_audit\.sql") as refused:
        apply_migrations(fresh_url, folder)
    assert "new migration" in str(refused.value)
    assert not _has_table(fresh_url, "migrate_probe"), "nothing is applied past an edited migration"
    with pytest.raises(MigrationEdited, match=r"0003_auth_audit\.sql"):
        require_migrated(fresh_url, folder)  # nor does a process start on it


def test_a_failing_migration_applies_nothing_of_itself_and_names_its_file(fresh_url, folder):
    apply_migrations(fresh_url, folder)
    (folder / "9000_broken.sql").write_text("CREATE TABLE migrate_probe (id int);\nSELECT 1 / 0;\n")
    with pytest.raises(MigrationError, match=r"9000_broken\.sql failed: division by zero"):
        apply_migrations(fresh_url, folder)
    assert not _has_table(fresh_url, "migrate_probe")
    assert "9000_broken" not in _applied(fresh_url)


def _migrate_the_old_way(url: str, count: int) -> None:
    """What the runner before yoyo did: each file's SQL, and its name in schema_migrations."""
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL"
                     " DEFAULT now())")
        for f in migration_files()[:count]:
            conn.execute(f.path.read_text())
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (f.name,))


def test_a_database_of_the_old_runner_is_adopted_and_gets_only_the_new_files(fresh_url):
    old = len(NAMES) - 2
    _migrate_the_old_way(fresh_url, old)
    with pytest.raises(DatabaseNotMigrated, match="run `sightline migrate`"):
        require_migrated(fresh_url)
    # Re-running an adopted file would fail (its tables exist): only the two new ones run.
    assert apply_migrations(fresh_url) == NAMES[old:]
    assert _applied(fresh_url) == NAMES
    assert apply_migrations(fresh_url) == []
    require_migrated(fresh_url)


def test_a_process_started_against_an_unmigrated_database_refuses(fresh_url):
    env = {**os.environ, "SIGHTLINE_DATABASE_URL": fresh_url}
    worker = subprocess.run([sys.executable, "-m", "workers.main"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert worker.returncode != 0
    assert "DatabaseNotMigrated" in worker.stderr and "run `sightline migrate`" in worker.stderr
    assert not _has_table(fresh_url, APPLIED_TABLE), "a worker never migrates"


async def test_the_api_refuses_an_unmigrated_database(fresh_url, tmp_path):
    from api.main import create_app

    app = create_app(Settings(_env_file=None, data_dir=tmp_path, database_url=fresh_url))
    with pytest.raises(DatabaseNotMigrated, match="run `sightline migrate`"):
        async with app.router.lifespan_context(app):  # what uvicorn runs before it accepts a request
            pass


def test_a_database_one_migration_behind_is_refused_naming_it(fresh_url):
    apply_migrations(fresh_url)
    with psycopg.connect(fresh_url) as conn:
        conn.execute(f"DELETE FROM {APPLIED_TABLE} WHERE migration_id = %s", (NAMES[-1],))
    with pytest.raises(DatabaseNotMigrated, match=rf"1 of {len(NAMES)} not applied \({NAMES[-1]}\)"):
        require_migrated(fresh_url)


def test_commands_refuse_an_unmigrated_database_with_what_to_run(fresh_url, monkeypatch):
    from cli.keys import keys_app
    from infra.settings import get_settings

    monkeypatch.setenv("SIGHTLINE_DATABASE_URL", fresh_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(keys_app, ["list"], env={"COLUMNS": "250"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "run `sightline migrate`" in result.output
    assert not _has_table(fresh_url, "api_keys"), "a command never migrates"
