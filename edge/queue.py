"""The agent's durable local queue: SQLite in WAL mode (synchronous=FULL) for the rows, one file per
frame for the bytes, both fsynced before a frame is acknowledged.

A frame goes through three tables. `frames` holds what waits for the API: the row names its file, its
sha256, when it was captured and, once cut into a batch, that batch and its position. `batches` holds
the batches cut and not yet accepted; a batch's idempotency key is `edge-<agent id>-<batch seq>`, the
agent id random per queue and the sequence AUTOINCREMENT (never reused), so a key names one set of
frames for good: a retry after a lost response, or after the agent was killed mid-upload, sends the
same frames under the same key and the API answers 200 with the batch it already has. A frame leaves
`frames` only in the transaction that records the API's acceptance, moving to `sent`, where its local
prediction waits for the central one (edge.reconcile) so that disagreement is visible.

The disk bound counts the queued frames' bytes, and the bytes reserved by frames being written: past
it `stage` raises QueueFull and nothing is written. Acknowledged frames are never dropped for room.

One connection, used by one thread at a time under a lock: the agent calls these methods through
asyncio.to_thread, and each is a few milliseconds (the fsyncs).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from infra.store import sha256_hex

DrainOrder = Literal["live-first", "oldest-first"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    cut_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS frames (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    file TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    captured_at REAL NOT NULL,
    batch_seq INTEGER REFERENCES batches (seq),
    position INTEGER,
    local_label TEXT,
    local_confidence REAL,
    local_novelty REAL,
    local_unfamiliar INTEGER,
    local_model TEXT
);
CREATE INDEX IF NOT EXISTS frames_waiting ON frames (camera_id, captured_at) WHERE batch_seq IS NULL;
CREATE INDEX IF NOT EXISTS frames_of_batch ON frames (batch_seq, position);
CREATE TABLE IF NOT EXISTS sent (
    frame_seq INTEGER PRIMARY KEY,
    camera_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    captured_at REAL NOT NULL,
    batch_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    accepted_at REAL NOT NULL,
    local_label TEXT,
    local_confidence REAL,
    local_novelty REAL,
    local_unfamiliar INTEGER,
    local_model TEXT,
    central_status TEXT,  -- classified, rejected, or unreconciled (given up on)
    central_label TEXT,
    central_confidence REAL,
    central_model TEXT,
    reconciled_at REAL
);
CREATE INDEX IF NOT EXISTS sent_unreconciled ON sent (batch_id) WHERE reconciled_at IS NULL;
CREATE INDEX IF NOT EXISTS sent_accepted ON sent (accepted_at);
"""

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


class QueueFull(Exception):
    """The disk bound is reached: the frame was not taken (nothing of it was written)."""

    def __init__(self, queued_bytes: int, max_bytes: int, size: int) -> None:
        super().__init__(f"the edge queue is full: {queued_bytes} of {max_bytes} bytes are taken by frames waiting "
                         f"for the API, and this frame needs {size} more; it was not taken (frames already "
                         "acknowledged stay queued until the API accepts them)")
        self.queued_bytes, self.max_bytes, self.size = queued_bytes, max_bytes, size


@dataclass(frozen=True)
class LocalDecision:
    """The local model's answer for one frame."""

    label: str
    confidence: float
    novelty: float
    unfamiliar: bool
    model_version: str


@dataclass(frozen=True)
class Staged:
    """A frame's file, written and fsynced, not yet a row: `commit` makes it a queued frame."""

    path: Path
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class QueuedFrame:
    seq: int
    camera_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    path: Path
    captured_at: float


@dataclass
class PendingBatch:
    """A batch cut from the queue and not yet accepted: its key and frames are fixed."""

    seq: int
    camera_id: str
    idempotency_key: str
    frames: list[QueuedFrame]
    attempts: int = 0
    last_error: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.frames)


@dataclass(frozen=True)
class Depth:
    frames: int
    bytes: int
    oldest_captured_at: float | None
    batches_cut: int


@dataclass(frozen=True)
class CentralResult:
    """What the API recorded for one uploaded frame: its prediction, or that it was rejected."""

    position: int
    status: Literal["classified", "rejected"]
    label: str | None = None
    confidence: float | None = None
    model_version: str | None = None


@dataclass
class Agreement:
    reconciled: int = 0
    disagreements: int = 0
    rejected: int = 0
    awaiting: int = 0
    pairs: dict[str, int] = field(default_factory=dict)  # "local version -> central version": frames


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FrameQueue:
    def __init__(self, root: Path, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.files = root / "frames"
        self.files.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "queue.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is on disk when it returns (NORMAL may lose the last ones at power loss).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        with self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('agent_id', ?)", (secrets.token_hex(6),))
        self.agent_id = self.get_meta("agent_id") or ""
        self._reserved = 0
        self._queued = int(self._db.execute("SELECT coalesce(sum(size_bytes), 0) FROM frames").fetchone()[0])
        self._remove_orphans()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _remove_orphans(self) -> None:
        """Files no row names: written by a capture that died before its commit, or left by an accept
        that committed and died before unlinking. Neither was (or is any longer) acknowledged."""
        known = {r[0] for r in self._db.execute("SELECT file FROM frames")}
        for path in self.files.iterdir():
            if path.name not in known:
                path.unlink(missing_ok=True)

    # ---- capture: stage the file, then commit the row ----

    def stage(self, data: bytes, content_type: str) -> Staged:
        """Write the frame's file and fsync it (and its directory entry); QueueFull, with nothing
        written, when it would take the queue past its disk bound."""
        size = len(data)
        with self._lock:
            if self._queued + self._reserved + size > self.max_bytes:
                raise QueueFull(self._queued + self._reserved, self.max_bytes, size)
            self._reserved += size
        path = self.files / f"{uuid.uuid4().hex}{_EXTENSIONS.get(content_type, '.bin')}"
        try:
            with open(path, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.files)
        except BaseException:
            path.unlink(missing_ok=True)
            with self._lock:
                self._reserved -= size
            raise
        return Staged(path, size, sha256_hex(data), content_type)

    def commit(self, staged: Staged, camera_id: str, filename: str, source: str, captured_at: float,
               decision: LocalDecision | None = None, meta: dict[str, str] | None = None) -> int:
        """The staged frame as a queued row (and `meta` in the same transaction: the generated camera's
        next index moves only with the frame it made); durable when this returns. The frame's seq."""
        d = decision
        with self._lock:
            try:
                with self._tx() as db:
                    cursor = db.execute(
                        """INSERT INTO frames (camera_id, filename, content_type, size_bytes, sha256, file, source,
                               captured_at, local_label, local_confidence, local_novelty, local_unfamiliar,
                               local_model)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                        (camera_id, filename, staged.content_type, staged.size, staged.sha256, staged.path.name,
                         source, captured_at, d and d.label, d and d.confidence, d and d.novelty,
                         None if d is None else int(d.unfamiliar), d and d.model_version))
                    for key, value in (meta or {}).items():
                        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            finally:
                self._reserved -= staged.size
            self._queued += staged.size
        seq = cursor.lastrowid
        assert seq is not None
        return seq

    def abort(self, staged: Staged) -> None:
        staged.path.unlink(missing_ok=True)
        with self._lock:
            self._reserved -= staged.size

    # ---- upload: cut a batch, record attempts, accept ----

    def pending_batch(self) -> PendingBatch | None:
        """The oldest batch cut and not yet accepted (after a restart: the one the killed agent was
        sending), with its frames in position order."""
        with self._lock:
            row = self._db.execute("SELECT * FROM batches ORDER BY seq LIMIT 1").fetchone()
            return self._batch(row) if row is not None else None

    def _batch(self, row: sqlite3.Row) -> PendingBatch:
        frames = [self._frame(r) for r in self._db.execute(
            "SELECT * FROM frames WHERE batch_seq = ? ORDER BY position", (row["seq"],))]
        return PendingBatch(row["seq"], row["camera_id"], row["idempotency_key"], frames, row["attempts"],
                            row["last_error"])

    def _frame(self, row: sqlite3.Row) -> QueuedFrame:
        return QueuedFrame(row["seq"], row["camera_id"], row["filename"], row["content_type"], row["size_bytes"],
                           row["sha256"], self.files / row["file"], row["captured_at"])

    def cut_batch(self, *, max_frames: int, max_bytes: int, max_wait_s: float, order: DrainOrder,
                  live_window_s: float, backlog_max_frames: int | None = None,
                  now: float | None = None) -> PendingBatch | None:
        """The next batch to send, cut and recorded (its key fixed from here on), or None when no
        camera's frames are ready: `max_frames` of them waiting, or the oldest waiting `max_wait_s`.

        oldest-first: the camera whose oldest waiting frame is oldest, its oldest frames. live-first:
        a camera with live frames ready (captured in the last `live_window_s`) goes first, with its
        newest frames; otherwise the backlog, oldest first. A batch that starts in the backlog takes up
        to `backlog_max_frames` (default: `max_frames`)."""
        now = self.clock() if now is None else now
        with self._lock:
            cameras = self._db.execute(
                """SELECT camera_id, count(*) AS n, min(captured_at) AS oldest,
                          sum(captured_at >= :live) AS live_n,
                          min(CASE WHEN captured_at >= :live THEN captured_at END) AS oldest_live
                     FROM frames WHERE batch_seq IS NULL GROUP BY camera_id""",
                {"live": now - live_window_s}).fetchall()
            chosen: tuple[str, str] | None = None  # (camera, which frames)
            if order == "live-first":
                live = [c for c in cameras if c["live_n"] and (
                    c["live_n"] >= max_frames or now - c["oldest_live"] >= max_wait_s)]
                if live:
                    chosen = (min(live, key=lambda c: c["oldest_live"])["camera_id"], "newest-live")
                else:
                    backlog = [c for c in cameras if c["n"] > c["live_n"]]
                    if backlog:
                        chosen = (min(backlog, key=lambda c: c["oldest"])["camera_id"], "oldest")
            else:
                ready = [c for c in cameras if c["n"] >= max_frames or now - c["oldest"] >= max_wait_s]
                if ready:
                    chosen = (min(ready, key=lambda c: c["oldest"])["camera_id"], "oldest")
            if chosen is None:
                return None
            camera, which = chosen
            if which == "newest-live":
                rows = self._db.execute(
                    """SELECT * FROM frames WHERE batch_seq IS NULL AND camera_id = ? AND captured_at >= ?
                        ORDER BY captured_at DESC, seq DESC LIMIT ?""", (camera, now - live_window_s, max_frames),
                ).fetchall()[::-1]
            else:
                oldest = next(c["oldest"] for c in cameras if c["camera_id"] == camera)
                limit = max_frames if oldest >= now - live_window_s else backlog_max_frames or max_frames
                rows = self._db.execute(
                    """SELECT * FROM frames WHERE batch_seq IS NULL AND camera_id = ?
                        ORDER BY captured_at, seq LIMIT ?""", (camera, limit)).fetchall()
            taken: list[sqlite3.Row] = []
            total = 0
            for r in rows:
                if taken and total + r["size_bytes"] > max_bytes:
                    break
                taken.append(r)
                total += r["size_bytes"]
            with self._tx() as db:
                seq = self._new_batch(db, camera, now)
                db.executemany("UPDATE frames SET batch_seq = ?, position = ? WHERE seq = ?",
                               [(seq, i, r["seq"]) for i, r in enumerate(taken)])
            row = self._db.execute("SELECT * FROM batches WHERE seq = ?", (seq,)).fetchone()
            return self._batch(row)

    def _new_batch(self, db: sqlite3.Connection, camera: str, now: float) -> int:
        cursor = db.execute("INSERT INTO batches (camera_id, idempotency_key, cut_at) VALUES (?, '', ?)",
                            (camera, now))
        seq = cursor.lastrowid
        assert seq is not None
        db.execute("UPDATE batches SET idempotency_key = ? WHERE seq = ?", (f"edge-{self.agent_id}-{seq}", seq))
        return seq

    def rekey(self, batch: PendingBatch, reason: str) -> PendingBatch:
        """The same frames under a new key: the API said the key names other frames (409), so these
        frames are not in that batch and a new key cannot duplicate them."""
        with self._lock:
            with self._tx() as db:
                seq = self._new_batch(db, batch.camera_id, self.clock())
                db.execute("UPDATE frames SET batch_seq = ? WHERE batch_seq = ?", (seq, batch.seq))
                db.execute("UPDATE batches SET last_error = ? WHERE seq = ?", (reason[:500], seq))
                db.execute("DELETE FROM batches WHERE seq = ?", (batch.seq,))
            return self._batch(self._db.execute("SELECT * FROM batches WHERE seq = ?", (seq,)).fetchone())

    def release(self, batch: PendingBatch) -> None:
        """Return a batch's frames to the queue uncut (the API refused the batch as too large before it
        recorded anything, so no key of theirs was used): they go again in smaller batches."""
        with self._lock, self._tx() as db:
            db.execute("UPDATE frames SET batch_seq = NULL, position = NULL WHERE batch_seq = ?", (batch.seq,))
            db.execute("DELETE FROM batches WHERE seq = ?", (batch.seq,))

    def begin_attempt(self, batch: PendingBatch) -> None:
        """Count an attempt before its request goes: a batch with no attempt counted was never sent, so
        no answer of the API can be missing for it (after a kill too)."""
        with self._lock, self._tx() as db:
            db.execute("UPDATE batches SET attempts = attempts + 1 WHERE seq = ?", (batch.seq,))

    def record_attempt(self, batch: PendingBatch, error: str | None) -> None:
        with self._lock, self._tx() as db:
            db.execute("UPDATE batches SET last_error = ? WHERE seq = ?", (error and error[:500], batch.seq))

    def accept(self, batch: PendingBatch, batch_id: str, accepted_at: float | None = None) -> int:
        """The API accepted the batch: its frames leave the queue for `sent` in one transaction, then
        their files go. Returns how many frames."""
        accepted_at = self.clock() if accepted_at is None else accepted_at
        with self._lock:
            rows = self._db.execute("SELECT * FROM frames WHERE batch_seq = ? ORDER BY position",
                                    (batch.seq,)).fetchall()
            with self._tx() as db:
                db.executemany(
                    """INSERT OR REPLACE INTO sent (frame_seq, camera_id, filename, sha256, captured_at, batch_id,
                           position, accepted_at, local_label, local_confidence, local_novelty, local_unfamiliar,
                           local_model)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [(r["seq"], r["camera_id"], r["filename"], r["sha256"], r["captured_at"], batch_id,
                      r["position"], accepted_at, r["local_label"], r["local_confidence"], r["local_novelty"],
                      r["local_unfamiliar"], r["local_model"]) for r in rows])
                db.execute("DELETE FROM frames WHERE batch_seq = ?", (batch.seq,))
                db.execute("DELETE FROM batches WHERE seq = ?", (batch.seq,))
                # What `sightline edge status` shows as the last contact while no agent runs.
                db.execute("INSERT OR REPLACE INTO meta VALUES ('last_contact', ?)", (repr(accepted_at),))
            self._queued -= sum(r["size_bytes"] for r in rows)
        for r in rows:
            (self.files / r["file"]).unlink(missing_ok=True)
        return len(rows)

    def knows(self, sha256: str, filename: str, source: str) -> bool:
        """Whether a frame of these bytes and name from this source is queued or was sent: a watched
        file found half-taken after a crash was taken, or not."""
        with self._lock:
            query = ("SELECT 1 FROM frames WHERE sha256 = ? AND filename = ? AND source = ?"
                     " UNION ALL SELECT 1 FROM sent WHERE sha256 = ? AND filename = ?")
            return self._db.execute(query, (sha256, filename, source, sha256, filename)).fetchone() is not None

    def read(self, frame: QueuedFrame) -> bytes:
        return frame.path.read_bytes()

    # ---- what status shows ----

    def depth(self) -> Depth:
        with self._lock:
            frames, oldest = self._db.execute("SELECT count(*), min(captured_at) FROM frames").fetchone()
            batches = self._db.execute("SELECT count(*) FROM batches").fetchone()[0]
            return Depth(int(frames), self._queued, oldest, int(batches))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, values: dict[str, str]) -> None:
        with self._lock, self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    # ---- local and central predictions side by side (edge.reconcile) ----

    def awaiting_central(self, settled_before: float, limit: int = 20) -> list[str]:
        """Batch ids with uploaded frames whose central prediction is not recorded yet, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                """SELECT batch_id FROM sent WHERE reconciled_at IS NULL GROUP BY batch_id
                   HAVING max(accepted_at) <= ? ORDER BY min(accepted_at) LIMIT ?""", (settled_before, limit))]

    def record_central(self, batch_id: str, results: list[CentralResult]) -> tuple[int, int]:
        """Record the API's answers beside the local ones; (frames compared, of them disagreeing): frames
        classified both here and there."""
        now = self.clock()
        compared = disagreed = 0
        with self._lock, self._tx() as db:
            for r in results:
                row = db.execute("SELECT local_label FROM sent WHERE batch_id = ? AND position = ?"
                                 " AND reconciled_at IS NULL", (batch_id, r.position)).fetchone()
                if row is None:
                    continue
                db.execute(
                    """UPDATE sent SET central_status = ?, central_label = ?, central_confidence = ?,
                           central_model = ?, reconciled_at = ?
                        WHERE batch_id = ? AND position = ?""",
                    (r.status, r.label, r.confidence, r.model_version, now, batch_id, r.position))
                if r.status == "classified" and row["local_label"] is not None:
                    compared += 1
                    disagreed += row["local_label"] != r.label
        return compared, disagreed

    def give_up_central(self, accepted_before: float) -> int:
        """Frames whose central prediction never came (their batch failed, or was deleted): stop asking."""
        with self._lock, self._tx() as db:
            return db.execute("""UPDATE sent SET central_status = 'unreconciled', reconciled_at = ?
                                  WHERE reconciled_at IS NULL AND accepted_at < ?""",
                              (self.clock(), accepted_before)).rowcount

    def prune_sent(self, accepted_before: float) -> int:
        with self._lock, self._tx() as db:
            return db.execute("DELETE FROM sent WHERE accepted_at < ? AND reconciled_at IS NOT NULL",
                              (accepted_before,)).rowcount

    def agreement(self, since: float = 0.0) -> Agreement:
        """Local against central predictions of the frames uploaded since `since`."""
        with self._lock:
            rows = self._db.execute(
                """SELECT central_status, local_model, central_model, local_label = central_label AS agree,
                          count(*) AS n
                     FROM sent WHERE accepted_at >= ? GROUP BY 1, 2, 3, 4""", (since,)).fetchall()
        result = Agreement()
        for r in rows:
            if r["central_status"] is None:
                result.awaiting += r["n"]
            elif r["central_status"] == "rejected":
                result.rejected += r["n"]
            elif r["central_status"] == "classified" and r["local_model"] is not None:
                result.reconciled += r["n"]
                result.disagreements += r["n"] if not r["agree"] else 0
                pair = f"{r['local_model']} -> {r['central_model']}"
                result.pairs[pair] = result.pairs.get(pair, 0) + r["n"]
        return result
