"""Migrations: ordered, applied once each, safe when several processes run them at once."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg

from infra.db import apply_migrations, migration_files


def test_migration_files_are_ordered_and_numbered():
    names = [name for name, _ in migration_files()]
    assert names == sorted(names)
    assert all(name[:4].isdigit() and name[4] == "_" for name in names)
    assert len({name[:4] for name in names}) == len(names), "two migrations share a number"


def test_concurrent_runners_apply_each_migration_once(postgres_url):
    base, _, _ = postgres_url.rpartition("/")
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    try:
        code = f"from infra.db import apply_migrations; print(len(apply_migrations({url!r})))"
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
        applied = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
        assert all(p.returncode == 0 for p in procs)
        total = len(migration_files())
        assert sorted(applied) == [0, 0, 0, total]  # one runner did the work, the others found it done
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
        assert [r[0] for r in rows] == [n for n, _ in migration_files()]
        assert apply_migrations(url) == []
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
