"""`sightline edge status`: what the agent is doing, as the agent itself reports it on GET /status, or,
when it is not running, as its data dir shows (the queue read-only, and the model kept on disk).

Queue depth and bytes against the disk bound, the oldest waiting frame's age, the upload rate over the
last minute, when the API last answered, the model version (and the last one refused, with why), and
how often local and central predictions disagreed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.settings import EdgeSettings


@dataclass
class EdgeStatus:
    running: bool
    site_id: str
    api_url: str
    agent_id: str = ""
    queue_frames: int = 0
    queue_bytes: int = 0
    max_queue_bytes: int = 0
    batches_cut: int = 0
    oldest_frame_age_s: float | None = None
    upload_rate_fps: float = 0.0
    last_contact_at: float | None = None
    last_error: str | None = None
    held: str | None = None
    next_attempt_in_s: float | None = None
    model_ref: str = ""
    model_version: str | None = None
    model_since: float | None = None
    model_refusal: str | None = None
    model_error: str | None = None
    compared: int = 0
    disagreements: int = 0
    awaiting_central: int = 0
    version_pairs: dict[str, int] = field(default_factory=dict)
    cameras: dict[str, int] = field(default_factory=dict)  # generated camera -> frames captured
    # The latest frames whose local and central labels differ (edge.status.recent_disagreements).
    recent_disagreements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EdgeStatus:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def last_contact_age_s(self) -> float | None:
        return None if self.last_contact_at is None else max(0.0, time.time() - self.last_contact_at)

    def lines(self) -> list[tuple[str, str]]:
        """(what, value) rows for the command line."""
        def age(seconds: float | None) -> str:
            if seconds is None:
                return "-"
            return f"{seconds:.1f} s ago" if seconds < 120 else f"{seconds / 60:.1f} min ago"

        oldest = "-" if self.oldest_frame_age_s is None else f"{self.oldest_frame_age_s:.1f} s"
        rows = [
            ("agent", "running" if self.running else "not running"),
            ("site", f"{self.site_id} -> {self.api_url}"),
            ("queue", f"{self.queue_frames} frames, {self.queue_bytes / 1e6:.1f} of {self.max_queue_bytes / 1e6:.0f} MB"
                      f" ({self.batches_cut} batch cut)"),
            ("oldest frame", oldest),
            ("upload rate", f"{self.upload_rate_fps:.1f} frames/s over the last minute"),
            ("last contact", age(self.last_contact_age_s)),
            ("model", f"{self.model_version or 'none'} (following {self.model_ref or 'nothing'})"),
            ("predictions", f"{self.compared} compared with the API's, {self.disagreements} disagree, "
                            f"{self.awaiting_central} waiting for the API's"),
        ]
        if self.version_pairs:
            rows.append(("versions", ", ".join(f"{pair}: {n}" for pair, n in sorted(self.version_pairs.items()))))
        for name, value in (("held", self.held), ("last error", self.last_error), ("model refused", self.model_refusal),
                            ("model error", self.model_error)):
            if value:
                rows.append((name, value))
        if self.next_attempt_in_s:
            rows.append(("next attempt", f"in {self.next_attempt_in_s:.1f} s"))
        for camera, count in self.cameras.items():
            rows.append((f"camera {camera}", f"{count} frames captured"))
        return rows


def queue_database(settings: EdgeSettings) -> Path:
    return settings.resolved_data_dir / "queue" / "queue.sqlite3"


def _read_only(database: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def recent_disagreements(database: Path, limit: int = 5) -> list[dict[str, Any]]:
    """The latest uploaded frames whose local and central labels differ, newest first."""
    if not database.exists():
        return []
    db = _read_only(database)
    try:
        return [dict(r) for r in db.execute(
            """SELECT camera_id, filename, sha256, batch_id, position, captured_at, local_label, local_confidence,
                      local_model, central_label, central_confidence, central_model
                 FROM sent WHERE central_status = 'classified' AND local_model IS NOT NULL
                  AND local_label IS NOT central_label
                ORDER BY accepted_at DESC, position DESC LIMIT ?""", (limit,))]
    finally:
        db.close()


def offline_status(settings: EdgeSettings) -> EdgeStatus:
    """What the data dir says while no agent runs: the queue opened read-only (nothing is changed, so
    this is safe beside a running agent too), the model kept on disk."""
    root = settings.resolved_data_dir
    status = EdgeStatus(running=False, site_id=settings.site_id, api_url=settings.api_url,
                        max_queue_bytes=settings.max_queue_bytes, model_ref=settings.model_ref)
    database = queue_database(settings)
    if database.exists():
        db = _read_only(database)
        try:
            frames, size, oldest = db.execute("SELECT count(*), coalesce(sum(size_bytes), 0), min(captured_at) "
                                              "FROM frames").fetchone()
            meta = {r[0]: r[1] for r in db.execute("SELECT key, value FROM meta")}
            status.batches_cut = db.execute("SELECT count(*) FROM batches").fetchone()[0]
            error = db.execute("SELECT last_error FROM batches ORDER BY seq LIMIT 1").fetchone()
            compared, disagreements, awaiting = db.execute(
                """SELECT coalesce(sum(central_status = 'classified' AND local_model IS NOT NULL), 0),
                          coalesce(sum(central_status = 'classified' AND local_model IS NOT NULL
                                       AND local_label IS NOT central_label), 0),
                          coalesce(sum(central_status IS NULL), 0) FROM sent""").fetchone()
        finally:
            db.close()
        status.agent_id = meta.get("agent_id", "")
        status.queue_frames, status.queue_bytes = int(frames), int(size)
        status.oldest_frame_age_s = None if oldest is None else max(0.0, time.time() - oldest)
        status.last_contact_at = float(meta["last_contact"]) if "last_contact" in meta else None
        status.last_error = error[0] if error else None
        status.compared, status.disagreements, status.awaiting_central = compared, disagreements, awaiting
        status.cameras = {k.split(":")[1]: int(v) for k, v in meta.items() if k.startswith("camera:")}
        status.recent_disagreements = recent_disagreements(database)
    status.model_version = kept_model_version(root / "models")
    return status


def kept_model_version(models: Path) -> str | None:
    try:
        return str(json.loads((models / "current.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None
