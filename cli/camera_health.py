"""What `sightline status` adds under the stack's parts: the cameras whose health is degraded (image
quality out of their calibrated range, or a frozen image), with why and since when. Maintenance for
whoever looks after the cameras, apart from model drift; `POST /v1/cameras/{camera}/health/recalibrate`
(ops) recalibrates one after a deliberate change."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.db import Row


def degraded_cameras(url: str) -> list[Row]:
    """Degraded cameras, the longest degraded first. Reads only; a database before migration 0015 has none."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
        if conn.execute("SELECT to_regclass('camera_health') AS t").fetchone() in (None, {"t": None}):
            return []
        return conn.execute(
            "SELECT site_id, camera_id, reasons, since, repeated_frames, last_batch_id FROM camera_health"
            " WHERE state = 'degraded' ORDER BY since, site_id, camera_id").fetchall()


def _ago(since: datetime, now: datetime) -> str:
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def print_camera_health(console: Console, url: str) -> int:
    """Print the degraded cameras (or that there are none); how many there are."""
    rows = degraded_cameras(url)
    if not rows:
        console.print("cameras: none degraded")
        return 0
    now = datetime.now(UTC)
    table = Table("site", "camera", "reasons", "since", "last batch", title="degraded cameras (maintenance)")
    for row in rows:
        table.add_row(escape(row["site_id"]), escape(row["camera_id"]), f"[yellow]{', '.join(row['reasons'])}[/]",
                      f"{row['since']:%Y-%m-%d %H:%M:%S} UTC ({_ago(row['since'], now)})",
                      escape(row["last_batch_id"] or "-"))
    console.print(table)
    return len(rows)
