"""The model registry in Postgres: versions, the aliases production/candidate/shadow, and the history
of every alias change.

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


@dataclass
class AliasChange:
    alias: str
    from_version: str | None
    to_version: str | None
    changed_by: str
    reason: str
    changed_at: datetime


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
                 training_run_id: str | None = None, signature_key_id: str | None = None) -> ModelVersion:
        # A new version has no aliases yet: the inserted row is the whole ModelVersion.
        with self._connect() as conn:
            [registered] = conn.cursor(row_factory=class_row(ModelVersion)).execute(
                """INSERT INTO model_versions (version, number, architecture, manifest_key, manifest_sha256,
                       parent_version, dataset_snapshot_id, metrics, created_by, card, training_run_id,
                       signature_key_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
                (version, number, architecture, manifest_key, manifest_sha256, parent_version,
                 dataset_snapshot_id, Jsonb(metrics or {}), created_by, Jsonb(card or {}), training_run_id,
                 signature_key_id),
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

    def set_alias(self, alias: str, version: str | None, changed_by: str = "", reason: str = "") -> str | None:
        """Point `alias` at `version` (None clears it) and record the change; returns the previous version.
        Setting an alias to the version it already names records nothing."""
        if alias not in ALIASES:
            raise ValueError(f"unknown alias {alias!r}: choose one of {', '.join(ALIASES)}")
        with self._connect() as conn, conn.transaction():
            # Row lock on the alias (or the gap) so two promotions serialise and the history stays exact.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('model_alias:' || %s))", (alias,))
            row = conn.execute("SELECT version FROM model_aliases WHERE alias = %s", (alias,)).fetchone()
            previous = row["version"] if row else None
            if previous == version:
                return previous
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

    def set_traffic(self, split: TrafficSplit, changed_by: str = "", reason: str = "") -> bool:
        """Make `split` the live one and record the change; returns False (and records nothing) when it
        is live already, so a retried write leaves one history row."""
        for version in split.versions:
            if self.get(version) is None:
                raise ModelNotFound(f"no model version {version!r}")
        body = split.as_dict()
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('model_traffic'))")
            row = conn.execute("SELECT * FROM model_traffic WHERE name = 'live'").fetchone()
            current = TrafficSplit.from_row(row) if row else TrafficSplit()
            if current.as_dict() == body and (row is None or row["rollout_id"] == split.rollout_id):
                return False
            conn.execute(
                """INSERT INTO model_traffic (name, weights, shadow_version, shadow_share, rollout_id, changed_by,
                                              reason)
                   VALUES ('live', %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (name) DO UPDATE SET weights = EXCLUDED.weights,
                       shadow_version = EXCLUDED.shadow_version, shadow_share = EXCLUDED.shadow_share,
                       rollout_id = EXCLUDED.rollout_id, changed_by = EXCLUDED.changed_by,
                       reason = EXCLUDED.reason, updated_at = now()""",
                (Jsonb(body["weights"]), split.shadow_version, split.shadow_share, split.rollout_id, changed_by,
                 reason))
            conn.execute(
                """INSERT INTO model_traffic_history (weights, shadow_version, shadow_share, rollout_id, changed_by,
                                                      reason) VALUES (%s, %s, %s, %s, %s, %s)""",
                (Jsonb(body["weights"]), split.shadow_version, split.shadow_share, split.rollout_id, changed_by,
                 reason))
        return True

    def traffic_history(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute("SELECT * FROM model_traffic_history ORDER BY id").fetchall()
