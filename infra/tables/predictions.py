"""The `predictions` table: one row per frame and model version, so a retried write (or a worker killed
mid-write) leaves exactly one row per frame and version, and versions can predict a frame side by side."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row


@dataclass(frozen=True)
class NewPrediction:
    frame_id: str
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    quality: dict[str, float]
    timings: dict[str, float]
    novelty: float | None = None
    unfamiliar: bool = False
    # A detection version's boxes (vision.boxes.Box.as_dict()); None from a classifier.
    boxes: list[dict] | None = None


# One statement for all of a batch's predictions, their values as one JSON document: a statement per
# row, or an array parameter per column, cost the worker more CPU (each value adapted apart) than the
# rows cost Postgres; one json.dumps of the whole list is the cheapest way to hand them over.
_UPSERT_MANY = """
INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, quality, timings, novelty,
                         unfamiliar, boxes)
SELECT frame_id, model_version, label, confidence, probabilities, quality, timings, novelty, unfamiliar,
       -- a JSON null (a classifier's) is stored as SQL NULL
       CASE WHEN jsonb_typeof(boxes) = 'array' THEN boxes END
  FROM jsonb_to_recordset(%s::jsonb) AS r(frame_id text, model_version text, label text, confidence real,
                                          probabilities jsonb, quality jsonb, timings jsonb, novelty real,
                                          unfamiliar boolean, boxes jsonb)
ON CONFLICT (frame_id, model_version) DO UPDATE
   SET label = EXCLUDED.label, confidence = EXCLUDED.confidence, probabilities = EXCLUDED.probabilities,
       quality = EXCLUDED.quality, timings = EXCLUDED.timings, novelty = EXCLUDED.novelty,
       unfamiliar = EXCLUDED.unfamiliar, boxes = EXCLUDED.boxes
"""


async def upsert(conn: DbConnection, predictions: Sequence[NewPrediction]) -> None:
    """Raises psycopg.errors.ForeignKeyViolation for a frame that was never recorded."""
    if predictions:
        await conn.execute(_UPSERT_MANY, (Jsonb([asdict(p) for p in predictions]),))


async def replace_of_frames(conn: DbConnection, frame_ids: Sequence[str], rows: Sequence[NewPrediction]) -> None:
    """The predictions of these frames become exactly `rows`. A classification retried after its worker
    died may get another version for a frame than the attempt that died (the split or the production
    alias moved in between); that attempt's rows were never acted on, so they go, and each frame keeps
    the one prediction its batch routed on."""
    await conn.execute(
        "DELETE FROM predictions t WHERE t.frame_id = ANY(%s) AND (t.frame_id, t.model_version)"
        " NOT IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (list(frame_ids), [r.frame_id for r in rows], [r.model_version for r in rows]))
    await upsert(conn, rows)


@dataclass
class RecordedOutcome:
    """What the predictions and routes recorded for some frames say, as a classification answered it."""

    classes: list[str]
    classified: int
    unfamiliar: int
    label_counts: dict[str, int]
    version_counts: dict[str, int]
    routes: list[Row]  # frame_id, route, reason, workflow_id, label, confidence, model_version


async def recorded_outcome(conn: DbConnection, frame_ids: Sequence[str]) -> RecordedOutcome:
    cur = await conn.execute(
        "SELECT frame_id, model_version, label, unfamiliar, probabilities FROM predictions WHERE frame_id = ANY(%s)",
        (list(frame_ids),))
    rows = await cur.fetchall()
    cur = await conn.execute(
        "SELECT r.frame_id, r.route, r.reason, r.workflow_id, p.label, p.confidence, p.model_version, p.boxes"
        "  FROM frame_routes r JOIN predictions p USING (frame_id)"
        " WHERE r.frame_id = ANY(%s) ORDER BY r.frame_id, r.route", (list(frame_ids),))
    routes = await cur.fetchall()
    return RecordedOutcome(
        classes=sorted(rows[0]["probabilities"]) if rows else [], classified=len(rows),
        unfamiliar=sum(1 for r in rows if r["unfamiliar"]), label_counts=dict(Counter(r["label"] for r in rows)),
        version_counts=dict(Counter(r["model_version"] for r in rows)), routes=routes)


async def of_frame(conn: DbConnection, frame_id: str) -> list[Row]:
    """Every version's prediction of the frame, newest first."""
    cur = await conn.execute(
        "SELECT model_version, label, confidence, probabilities, quality, novelty, unfamiliar, boxes, created_at"
        " FROM predictions"
        " WHERE frame_id = %s ORDER BY created_at DESC",
        (frame_id,),
    )
    return await cur.fetchall()


# ---- reads for drift checks (issue 10) ----

async def recent_of_site(conn: DbConnection, site_id: str, model_version: str, limit: int) -> list[Row]:
    """The site's last `limit` frames that `model_version` classified, newest first: their quality
    features, label, confidence, novelty and whether they were unfamiliar, and when they arrived."""
    cur = await conn.execute(
        """
        SELECT p.frame_id, p.label, p.confidence, p.quality, p.novelty, p.unfamiliar, b.created_at AS arrived_at
          FROM batches b
          JOIN frames f ON f.batch_id = b.batch_id
          JOIN predictions p ON p.frame_id = f.frame_id AND p.model_version = %s
         WHERE b.site_id = %s
         ORDER BY b.created_at DESC, f.position DESC
         LIMIT %s
        """,
        (model_version, site_id, limit),
    )
    return await cur.fetchall()


async def active_sites(conn: DbConnection, within_hours: float) -> list[str]:
    """Sites whose batches arrived within the last `within_hours` hours."""
    cur = await conn.execute(
        "SELECT DISTINCT site_id FROM batches WHERE created_at > now() - make_interval(secs => %s)"
        " ORDER BY site_id", (within_hours * 3600,))
    return [row["site_id"] for row in await cur.fetchall()]
