"""The model registry in Postgres: versions, the aliases production/candidate/shadow, the live traffic
split, and the history of every alias and split change.

The production and shadow aliases and the split are a model line's (one today, 'default'): every
change of them moves the line's revision in the same transaction, and a mover that names the revision
it read (`move`, `expected_revision`) changes nothing unless the line is still there. A rollout's moves
are applied that way, whole, so nobody's promotion is overwritten by a move decided before it.

Synchronous psycopg on purpose: its callers are the CLI, the deploy script and Serve replicas (which
call it from a worker thread), none of which share an event loop with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, class_row, dict_row
from psycopg.types.json import Jsonb

from vision.traffic import TrafficSplit

ALIASES = ("production", "candidate", "shadow")
LINE = "default"  # the one model line: one production alias, one shadow alias, one live split
# What serving follows: a change of these (or of the split) moves the line's revision. The candidate
# alias only names the version rollout takes next; a retraining handing one over moves nothing live.
LIVE_ALIASES = ("production", "shadow")


class ModelNotFound(LookupError):
    pass


@dataclass
class ModelVersion:
    version: str
    number: int
    architecture: str
    manifest_key: str
    manifest_sha256: str
    parent_version: str | None
    dataset_snapshot_id: str | None
    metrics: dict[str, Any]
    created_by: str
    created_at: datetime
    aliases: list[str] = field(default_factory=list)
    # The model card (vision.publishing.model_card), the retraining run that made it (one version per
    # run), and the key that signed its manifest.
    card: dict[str, Any] = field(default_factory=dict)
    training_run_id: str | None = None
    signature_key_id: str | None = None
    # "classification" or "detection" (vision.detector): what the version answers per frame.
    task: str = "classification"


@dataclass
class AliasChange:
    alias: str
    from_version: str | None
    to_version: str | None
    changed_by: str
    reason: str
    changed_at: datetime


@dataclass
class LineState:
    """A model line as one snapshot: its revision, the aliases and the split at that revision."""

    revision: int
    aliases: dict[str, str]
    traffic: TrafficSplit


@dataclass
class LineChange:
    """What moved the line to `revision`: each change (an alias from/to, or the split), by whom, why."""

    revision: int
    changes: list[dict[str, Any]]
    changed_by: str
    reason: str
    changed_at: datetime
    move_id: str | None = None

    def describe(self) -> str:
        what = ", ".join(describe_change(c) for c in self.changes) or "nothing"
        return f"{what} by {self.changed_by or 'someone'}" + (f" ({self.reason})" if self.reason else "")


def describe_change(change: dict[str, Any]) -> str:
    if "alias" in change:
        return f"{change['alias']} {change['from'] or 'unset'} -> {change['to'] or 'unset'}"
    split = TrafficSplit.from_row(change["to"])
    weights = " / ".join(f"{v} {round(w * 100, 1):g}%" for v, w in split.weights)
    shadow = f"shadow {split.shadow_version} {round(split.shadow_share * 100, 1):g}%" if split.shadow_version else ""
    return f"split -> {', '.join(p for p in (weights, shadow) if p) or 'all to production'}"


class RevisionConflict(RuntimeError):
    """The line moved since the revision a mover read: nothing of the move was applied."""

    def __init__(self, expected: int, current: int, changes: list[LineChange]) -> None:
        self.expected, self.current, self.changes = expected, current, changes
        moved = "; ".join(c.describe() for c in changes) or "no change recorded"
        super().__init__(f"the model line moved since revision {expected} (now {current}): {moved}")


@dataclass
class LineMove:
    """Changes applied together: aliases (a version, or None to clear one), the split (None: it stays),
    and the candidate alias cleared if it still names `release_candidate`."""

    aliases: dict[str, str | None] = field(default_factory=dict)
    traffic: TrafficSplit | None = None
    release_candidate: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # recorded with the move, and returned on a retry


@dataclass
class MoveResult:
    revision: int                   # the line's revision after the move: the one to name for the next
    changes: list[dict[str, Any]]   # what it changed (empty: everything was already so)
    replayed: bool = False          # applied before under its move id: this call changed nothing
    details: dict[str, Any] = field(default_factory=dict)


_SELECT = """
SELECT v.*, coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases
  FROM model_versions v LEFT JOIN model_aliases a ON a.version = v.version
"""


class ModelRegistry:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def _connect(self) -> psycopg.Connection[DictRow]:
        return psycopg.connect(self.database_url, row_factory=dict_row, autocommit=True)

    def reserve_version(self) -> tuple[str, int]:
        """A fresh version name; a sequence, so two trainers never get the same one (gaps are fine)."""
        with self._connect() as conn:
            [row] = conn.execute("SELECT nextval('model_version_number') AS n").fetchall()
        number = int(row["n"])
        return f"v{number}", number

    def register(self, version: str, number: int, architecture: str, manifest_key: str, manifest_sha256: str,
                 parent_version: str | None = None, dataset_snapshot_id: str | None = None,
                 metrics: dict[str, Any] | None = None, created_by: str = "", *, card: dict[str, Any] | None = None,
                 training_run_id: str | None = None, signature_key_id: str | None = None,
                 task: str = "classification") -> ModelVersion:
        # A new version has no aliases yet: the inserted row is the whole ModelVersion.
        with self._connect() as conn:
            [registered] = conn.cursor(row_factory=class_row(ModelVersion)).execute(
                """INSERT INTO model_versions (version, number, architecture, manifest_key, manifest_sha256,
                       parent_version, dataset_snapshot_id, metrics, created_by, card, training_run_id,
                       signature_key_id, task)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
                (version, number, architecture, manifest_key, manifest_sha256, parent_version,
                 dataset_snapshot_id, Jsonb(metrics or {}), created_by, Jsonb(card or {}), training_run_id,
                 signature_key_id, task),
            ).fetchall()
        return registered

    def set_signature_key(self, version: str, key_id: str) -> None:
        """Record which key signed the version's manifest (when an operator signs an older version)."""
        with self._connect() as conn:
            conn.execute("UPDATE model_versions SET signature_key_id = %s WHERE version = %s", (key_id, version))

    def of_training_run(self, training_run_id: str) -> ModelVersion | None:
        """The version a retraining run registered, if it got that far (one per run)."""
        with self._connect() as conn:
            versions = conn.cursor(row_factory=class_row(ModelVersion))
            return versions.execute(_SELECT + " WHERE v.training_run_id = %s GROUP BY v.version",
                                    (training_run_id,)).fetchone()

    def get(self, version: str) -> ModelVersion | None:
        with self._connect() as conn:
            versions = conn.cursor(row_factory=class_row(ModelVersion))
            return versions.execute(_SELECT + " WHERE v.version = %s GROUP BY v.version", (version,)).fetchone()

    def list_versions(self) -> list[ModelVersion]:
        with self._connect() as conn:
            versions = conn.cursor(row_factory=class_row(ModelVersion))
            return versions.execute(_SELECT + " GROUP BY v.version ORDER BY v.number").fetchall()

    def aliases(self) -> dict[str, str]:
        with self._connect() as conn:
            return {r["alias"]: r["version"] for r in conn.execute("SELECT alias, version FROM model_aliases")}

    def resolve(self, ref: str) -> ModelVersion:
        """An alias (production, candidate, shadow) or a version name -> the version it names."""
        if ref in ALIASES:
            with self._connect() as conn:
                row = conn.execute("SELECT version FROM model_aliases WHERE alias = %s", (ref,)).fetchone()
            if row is None:
                raise ModelNotFound(f"no model version has the alias {ref!r}")
            ref = row["version"]
        found = self.get(ref)
        if found is None:
            raise ModelNotFound(f"no model version {ref!r}")
        return found

    def set_alias(self, alias: str, version: str | None, changed_by: str = "", reason: str = "", *,
                  expected_revision: int | None = None) -> str | None:
        """Point `alias` at `version` (None clears it) and record the change; returns the previous version.
        Setting an alias to the version it already names records nothing. With `expected_revision`, only
        if the line is still at that revision (RevisionConflict otherwise)."""
        if alias not in ALIASES:
            raise ValueError(f"unknown alias {alias!r}: choose one of {', '.join(ALIASES)}")
        with self._connect() as conn, conn.transaction():
            revision = _lock_line(conn, expected_revision)
            previous, change = _put_alias(conn, alias, version, changed_by, reason)
            _commit(conn, revision, [change] if change else [], None, {}, changed_by, reason)
        return previous

    def alias_history(self, alias: str | None = None) -> list[AliasChange]:
        with self._connect() as conn:
            changes = conn.cursor(row_factory=class_row(AliasChange))
            return changes.execute(
                "SELECT alias, from_version, to_version, changed_by, reason, changed_at FROM model_alias_history"
                " WHERE %(a)s::text IS NULL OR alias = %(a)s ORDER BY id", {"a": alias}).fetchall()

    # ---- the live traffic split (issue 12): written by the rollout workflow only, read by serving ----

    def traffic(self) -> TrafficSplit:
        """The split serving follows for the production alias; none set: everything to production."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM model_traffic WHERE name = 'live'").fetchone()
        return TrafficSplit.from_row(row) if row else TrafficSplit()

    def set_traffic(self, split: TrafficSplit, changed_by: str = "", reason: str = "", *,
                    expected_revision: int | None = None) -> bool:
        """Make `split` the live one and record the change; returns False (and records nothing) when it
        is live already, so a retried write leaves one history row."""
        with self._connect() as conn, conn.transaction():
            revision = _lock_line(conn, expected_revision)
            change = _put_traffic(conn, split, changed_by, reason)
            _commit(conn, revision, [change] if change else [], None, {}, changed_by, reason)
        return change is not None

    # ---- the model line: its revision, and moves applied whole on the revision their mover read ----

    def line(self) -> LineState:
        """The line's revision with the aliases and the split at that revision (one snapshot)."""
        with self._connect() as conn:
            row = conn.execute(
                """SELECT l.revision,
                          (SELECT coalesce(jsonb_object_agg(a.alias, a.version), '{}') FROM model_aliases a) AS aliases,
                          (SELECT to_jsonb(t) FROM model_traffic t WHERE t.name = 'live') AS traffic
                     FROM model_lines l WHERE l.name = %s""", (LINE,)).fetchone()
        if row is None:
            raise RuntimeError(f"no model line {LINE!r}: apply the migrations")
        traffic = TrafficSplit.from_row(row["traffic"]) if row["traffic"] else TrafficSplit()
        return LineState(int(row["revision"]), dict(row["aliases"]), traffic)

    def move(self, move: LineMove, expected_revision: int | None, move_id: str | None = None,
             changed_by: str = "", reason: str = "") -> MoveResult:
        """Apply every change of `move` in one transaction, only if the line is still at `expected_revision`
        (None: whatever it is); RevisionConflict, naming what moved it since, otherwise, with nothing
        applied. A move already applied under `move_id` (a retry after it committed) is not applied again:
        its result comes back as it was, whatever moved the line since."""
        unknown = set(move.aliases) - set(ALIASES)
        if unknown:
            raise ValueError(f"unknown alias {', '.join(sorted(unknown))}: choose one of {', '.join(ALIASES)}")
        with self._connect() as conn, conn.transaction():
            revision = _lock_line(conn, None)
            if move_id is not None:
                done = conn.execute("SELECT revision, changes, details FROM model_line_changes WHERE move_id = %s",
                                    (move_id,)).fetchone()
                if done is not None:
                    return MoveResult(int(done["revision"]), done["changes"], True, done["details"])
            if expected_revision is not None and revision != expected_revision:
                raise RevisionConflict(expected_revision, revision, _changes_since(conn, expected_revision))
            changes = []
            for alias, version in move.aliases.items():
                changes.append(_put_alias(conn, alias, version, changed_by, reason)[1])
            if move.release_candidate is not None:
                row = conn.execute("SELECT version FROM model_aliases WHERE alias = 'candidate'").fetchone()
                if row is not None and row["version"] == move.release_candidate:
                    changes.append(_put_alias(conn, "candidate", None, changed_by, reason)[1])
            if move.traffic is not None:
                changes.append(_put_traffic(conn, move.traffic, changed_by, reason))
            made = [c for c in changes if c is not None]
            revision = _commit(conn, revision, made, move_id, move.details, changed_by, reason)
        return MoveResult(revision, made, False, move.details)

    def traffic_history(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute("SELECT * FROM model_traffic_history ORDER BY id").fetchall()


# ---- inside one transaction: the line's lock, each change, and the revision moved with them ----

def _lock_line(conn: psycopg.Connection[DictRow], expected_revision: int | None) -> int:
    """Lock the line's row until the transaction ends (every alias and split change serialises on it);
    its revision, which must be `expected_revision` when one is named."""
    row = conn.execute("SELECT revision FROM model_lines WHERE name = %s FOR UPDATE", (LINE,)).fetchone()
    if row is None:
        raise RuntimeError(f"no model line {LINE!r}: apply the migrations")
    revision = int(row["revision"])
    if expected_revision is not None and revision != expected_revision:
        raise RevisionConflict(expected_revision, revision, _changes_since(conn, expected_revision))
    return revision


def _changes_since(conn: psycopg.Connection[DictRow], revision: int) -> list[LineChange]:
    changes = conn.cursor(row_factory=class_row(LineChange))
    return changes.execute(
        "SELECT revision, changes, changed_by, reason, changed_at, move_id FROM model_line_changes"
        " WHERE line = %s AND revision > %s AND jsonb_array_length(changes) > 0 ORDER BY id",
        (LINE, revision)).fetchall()


def _put_alias(conn: psycopg.Connection[DictRow], alias: str, version: str | None, changed_by: str,
               reason: str) -> tuple[str | None, dict[str, Any] | None]:
    """The alias's previous version, and the change made (None: it named `version` already)."""
    row = conn.execute("SELECT version FROM model_aliases WHERE alias = %s", (alias,)).fetchone()
    previous = row["version"] if row else None
    if previous == version:
        return previous, None
    if version is None:
        conn.execute("DELETE FROM model_aliases WHERE alias = %s", (alias,))
    else:
        if conn.execute("SELECT 1 FROM model_versions WHERE version = %s", (version,)).fetchone() is None:
            raise ModelNotFound(f"no model version {version!r}")
        conn.execute(
            """INSERT INTO model_aliases (alias, version) VALUES (%s, %s)
               ON CONFLICT (alias) DO UPDATE SET version = EXCLUDED.version, updated_at = now()""",
            (alias, version),
        )
    conn.execute(
        """INSERT INTO model_alias_history (alias, from_version, to_version, changed_by, reason)
           VALUES (%s, %s, %s, %s, %s)""",
        (alias, previous, version, changed_by, reason),
    )
    return previous, {"alias": alias, "from": previous, "to": version}


def _put_traffic(conn: psycopg.Connection[DictRow], split: TrafficSplit, changed_by: str,
                 reason: str) -> dict[str, Any] | None:
    """The change made to the live split (None: `split` was live already, by the same rollout)."""
    for version in split.versions:
        if conn.execute("SELECT 1 FROM model_versions WHERE version = %s", (version,)).fetchone() is None:
            raise ModelNotFound(f"no model version {version!r}")
    body = split.as_dict()
    row = conn.execute("SELECT * FROM model_traffic WHERE name = 'live'").fetchone()
    current = TrafficSplit.from_row(row) if row else TrafficSplit()
    if current.as_dict() == body and (row is None or row["rollout_id"] == split.rollout_id):
        return None
    conn.execute(
        """INSERT INTO model_traffic (name, weights, shadow_version, shadow_share, rollout_id, changed_by, reason)
           VALUES ('live', %s, %s, %s, %s, %s, %s)
           ON CONFLICT (name) DO UPDATE SET weights = EXCLUDED.weights,
               shadow_version = EXCLUDED.shadow_version, shadow_share = EXCLUDED.shadow_share,
               rollout_id = EXCLUDED.rollout_id, changed_by = EXCLUDED.changed_by,
               reason = EXCLUDED.reason, updated_at = now()""",
        (Jsonb(body["weights"]), split.shadow_version, split.shadow_share, split.rollout_id, changed_by, reason))
    conn.execute(
        """INSERT INTO model_traffic_history (weights, shadow_version, shadow_share, rollout_id, changed_by,
                                              reason) VALUES (%s, %s, %s, %s, %s, %s)""",
        (Jsonb(body["weights"]), split.shadow_version, split.shadow_share, split.rollout_id, changed_by, reason))
    return {"traffic": "live", "from": current.as_dict(), "to": body, "rollout_id": split.rollout_id}


def _commit(conn: psycopg.Connection[DictRow], revision: int, changes: list[dict[str, Any]], move_id: str | None,
            details: dict[str, Any], changed_by: str, reason: str) -> int:
    """Move the revision if anything live changed, and record what did; a named move is recorded even
    when it changed nothing live (so its retry finds it). The line's revision afterwards."""
    live = [c for c in changes if "traffic" in c or c.get("alias") in LIVE_ALIASES]
    if live:
        revision += 1
        conn.execute("UPDATE model_lines SET revision = %s, updated_at = now() WHERE name = %s", (revision, LINE))
    if live or move_id is not None:
        conn.execute(
            """INSERT INTO model_line_changes (line, revision, move_id, changes, details, changed_by, reason)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (LINE, revision, move_id, Jsonb(changes), Jsonb(details), changed_by, reason))
    return revision
