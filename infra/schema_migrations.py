"""The SQL migrations in infra/migrations/ (NNNN_<what>.sql), applied in name order by yoyo-migrations.

They are applied once, by `sightline migrate` (and `sightline up`, and the compose `migrate` job);
every other process only checks at its start that the database is at the latest migration
(`require_migrated`) and refuses to start otherwise. Each migration's statements commit in one
transaction with yoyo's record of it and the sha256 of its file. yoyo knows a migration by its name
only, so an applied file edited later would be skipped silently: the runner compares the stored sha256
with the file's and refuses, naming the file, before it applies anything.

A session advisory lock serialises concurrent runners: the second waits, then finds the work done. It
is the key the runner before yoyo locked, so an old and a new runner exclude each other too. Databases
that runner migrated (a `schema_migrations` table of names) are adopted: those names are marked
applied, with the sha256 of their files as they are now, and never run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from yoyo import internalmigrations, read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri
from yoyo.migrations import Migration, default_migration_table

from infra.log import get_logger

SOURCE = "package:infra:migrations"  # yoyo's name for the package's folder; a test may pass another folder
APPLIED_TABLE = default_migration_table  # yoyo's: one row per applied migration
CHECKSUM_TABLE = "migration_checksums"  # ours: the sha256 of each applied migration's file
LEGACY_TABLE = "schema_migrations"  # the runner before yoyo: names only
_LOCK = 0x5167_4C4E  # arbitrary, fixed ("SgLN"); the runner before yoyo used it too

log = get_logger(__name__)


class MigrationError(RuntimeError):
    """The database cannot be brought to, or is not at, the schema this code expects."""


class MigrationEdited(MigrationError):
    """An applied migration's file no longer matches what was applied."""


class DatabaseNotMigrated(MigrationError):
    """A process started against a database that is not at the latest migration."""


@dataclass(frozen=True)
class MigrationFile:
    name: str  # the file name without `.sql`: yoyo's migration id
    path: Path
    sha256: str


def _sha256(path: str | Path) -> str:
    # Line endings normalised: a checkout with CRLF is not an edit.
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _read(source: str | Path) -> list[Migration]:
    return list(read_migrations(str(source)))


def migration_files(source: str | Path = SOURCE) -> list[MigrationFile]:
    """Every migration file, in the order they apply (name order)."""
    return [MigrationFile(m.id, Path(m.path), _sha256(m.path)) for m in _read(source)]


def _edited_message(edited: Iterable[tuple[str, str, str]]) -> str:
    files = "; ".join(f"{path} (sha256 {then[:12]} when applied, {now[:12]} now)" for path, then, now in edited)
    return (f"applied migrations were edited: {files}. A migration that ran is never run again, so the edit "
            "would never reach this database: restore the file and put the change in a new migration.")


def _yoyo_uri(url: str) -> str:
    """yoyo's name for psycopg 3 is the `postgresql+psycopg` scheme; the rest of the URL is the same."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise ValueError("the database URL must be postgresql://…")
    return f"postgresql+psycopg://{rest}"


@contextmanager
def _locked_backend(url: str) -> Iterator[PostgresqlPsycopgBackend]:
    backend = PostgresqlPsycopgBackend(parse_uri(_yoyo_uri(url)), APPLIED_TABLE)
    with backend:  # closes the connection, which also releases the lock
        # Its connection is in autocommit: a session lock, held across the transactions below.
        backend.execute("SELECT pg_advisory_lock(:key)", {"key": _LOCK})
        backend.init_database()
        # yoyo's own tables, created under our lock rather than its lock table, whose row a runner
        # killed at that moment would leave behind.
        if internalmigrations.needs_upgrading(backend):
            internalmigrations.upgrade(backend)
        with backend.transaction():
            backend.execute(f"CREATE TABLE IF NOT EXISTS {CHECKSUM_TABLE} (migration_id text PRIMARY KEY,"
                            " sha256 text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())")
        yield backend


def _record_checksum(backend: PostgresqlPsycopgBackend, migration: Migration) -> None:
    backend.execute(f"INSERT INTO {CHECKSUM_TABLE} (migration_id, sha256) VALUES (:id, :sha256)"
                    " ON CONFLICT (migration_id) DO UPDATE SET sha256 = EXCLUDED.sha256, recorded_at = now()",
                    {"id": migration.id, "sha256": _sha256(migration.path)})


def _adopt_legacy(backend: PostgresqlPsycopgBackend, migrations: list[Migration]) -> list[str]:
    """Mark applied what the runner before yoyo applied (checked on every run, so a database that an old
    process migrated further during an upgrade is adopted too)."""
    if LEGACY_TABLE not in backend.list_tables():
        return []
    names = {row[0] for row in backend.execute(f"SELECT name FROM {LEGACY_TABLE}").fetchall()}
    applied = set(backend.get_applied_migration_hashes())
    adopted = [m for m in migrations if m.id in names and m.hash not in applied]
    with backend.transaction():
        for migration in adopted:
            backend.mark_one(migration)
            _record_checksum(backend, migration)
    if adopted:
        log.info("adopted the migrations the runner before yoyo applied", migrations=[m.id for m in adopted])
    return [m.id for m in adopted]


def _refuse_edited(backend: PostgresqlPsycopgBackend, migrations: list[Migration]) -> None:
    stored = dict(backend.execute(f"SELECT migration_id, sha256 FROM {CHECKSUM_TABLE}").fetchall())
    applied = set(backend.get_applied_migration_hashes())
    edited = [(m.path, stored[m.id], _sha256(m.path)) for m in migrations
              if m.hash in applied and m.id in stored and stored[m.id] != _sha256(m.path)]
    if edited:
        raise MigrationEdited(_edited_message(edited))
    # Applied by yoyo's own command, without us: the file as it is now is what we hold it to from here.
    unrecorded = [m for m in migrations if m.hash in applied and m.id not in stored]
    if unrecorded:
        with backend.transaction():
            for migration in unrecorded:
                _record_checksum(backend, migration)


def _apply_one(backend: PostgresqlPsycopgBackend, migration: Migration) -> None:
    migration.load()
    try:
        if migration.use_transactions:
            # Statements, record and checksum commit together: a runner killed midway leaves none of them.
            with backend.transaction():
                migration.process_steps(backend, "apply")
                backend.log_migration(migration, "apply")
                backend.mark_one(migration, log=False)
                _record_checksum(backend, migration)
        else:  # `-- transactional: false` (CREATE INDEX CONCURRENTLY): its statements commit one by one
            migration.process_steps(backend, "apply")
            with backend.transaction():
                backend.log_migration(migration, "apply")
                backend.mark_one(migration, log=False)
                _record_checksum(backend, migration)
    except psycopg.Error as exc:
        raise MigrationError(f"{migration.path} failed: {exc}") from exc


def apply_migrations(url: str, source: str | Path = SOURCE) -> list[str]:
    """Apply every migration not yet applied, in name order; the names this call applied. Raises
    MigrationEdited, before applying anything, when an applied migration's file has changed."""
    migrations = _read(source)
    with _locked_backend(url) as backend:
        _adopt_legacy(backend, migrations)
        _refuse_edited(backend, migrations)
        applied_hashes = set(backend.get_applied_migration_hashes())
        applied = []
        for migration in migrations:
            if migration.hash not in applied_hashes:
                _apply_one(backend, migration)
                applied.append(migration.id)
    return applied


def require_migrated(url: str, source: str | Path = SOURCE) -> None:
    """At a process's start: raise DatabaseNotMigrated (or MigrationEdited) unless the database is at the
    latest migration, saying what to run. It only reads: applying is `sightline migrate`'s job."""
    files = migration_files(source)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        applied: set[str] = set()
        stored: dict[str, str] = {}
        if APPLIED_TABLE in tables:
            applied = {row[0] for row in conn.execute(f"SELECT migration_id FROM {APPLIED_TABLE}")}
        if CHECKSUM_TABLE in tables:
            stored = {row[0]: row[1] for row in conn.execute(f"SELECT migration_id, sha256 FROM {CHECKSUM_TABLE}")}
    edited = [(str(f.path), stored[f.name], f.sha256) for f in files if f.name in stored and stored[f.name] != f.sha256]
    if edited:
        raise MigrationEdited(_edited_message(edited))
    pending = [f.name for f in files if f.name not in applied]
    if pending:
        raise DatabaseNotMigrated(
            f"the database is not at the latest migration: {len(pending)} of {len(files)} not applied "
            f"({', '.join(pending)}); run `sightline migrate`")
