"""Where the local stack's services are, derived from settings and the data dir."""

from __future__ import annotations

from pathlib import Path

from infra.settings import Settings

LOCAL_DATABASE = "sightline"


def postgres_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / "postgres"


def database_url(settings: Settings) -> str:
    """The configured URL, or the database of the Postgres server the local stack runs. That server
    keeps its port across restarts (infra.postgres_server), so a URL resolved once stays good."""
    if settings.database_url:
        return settings.database_url
    from infra.postgres_server import LocalPostgres

    server = LocalPostgres(postgres_dir(settings) / "pgdata")
    if server.pid() is None:
        raise RuntimeError("no SIGHTLINE_DATABASE_URL and the local Postgres is not running: run `sightline up`")
    server.port = server.running_port() or server.port
    return server.url_for(LOCAL_DATABASE)
