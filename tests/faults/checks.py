"""What must hold after any number of kills, read from Postgres (the records) and Temporal (the
authority on workflows): every accepted batch completed with all its frames, one prediction per
accepted frame and model version, one review task per frame sent to review in the projection and in
Temporal alike, no workflow left running but the review tasks that wait for people, and no batch
recorded that was never accepted (frames of a failed start left behind)."""

from __future__ import annotations

from collections import Counter

from temporalio.client import Client

from infra.db import DbPool
from workflows import search_attributes as sa
from workflows.batch_types import WORKFLOW_NAME as BATCH_WORKFLOW
from workflows.review_types import REASONS, review_workflow_id
from workflows.review_types import WORKFLOW_NAME as REVIEW_WORKFLOW


async def settled(pool: DbPool, client: Client, batch_ids: list[str], site_id: str) -> bool:
    """Whether every one of these batches has finished; a batch workflow that closed without completing
    fails the check at once, with its failure."""
    failed = [w async for w in client.list_workflows(
        f"WorkflowType = '{BATCH_WORKFLOW}' AND {sa.SITE.name} = '{site_id}' "
        "AND ExecutionStatus != 'Running' AND ExecutionStatus != 'Completed'")]
    if failed:
        first = await client.get_workflow_handle(failed[0].id).describe()
        history = await client.get_workflow_handle(failed[0].id).fetch_history()
        closing = history.events[-1] if history.events else None
        raise AssertionError(f"{len(failed)} batch workflows closed without completing, e.g. {failed[0].id} "
                             f"({first.status.name if first.status else '?'}): {closing}")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM batches WHERE batch_id = ANY(%s) "
                                 "AND status IN ('completed', 'failed')", (batch_ids,))
        row = await cur.fetchone()
    return row is not None and row["n"] == len(batch_ids)


async def check_batches(pool: DbPool, accepted: dict[str, int], site_id: str) -> None:
    """Every accepted batch completed, with every frame submitted recorded and settled; and the site's
    batch rows are exactly the accepted batches: a batch turned away and never accepted again would
    be an orphan, its frames stored for nothing."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT b.batch_id, b.status, b.frame_count, count(f.frame_id) AS recorded, "
            "count(f.frame_id) FILTER (WHERE f.status NOT IN ('accepted', 'rejected')) AS unsettled "
            "FROM batches b LEFT JOIN frames f USING (batch_id) WHERE b.site_id = %s GROUP BY b.batch_id",
            (site_id,))
        rows = {r["batch_id"]: r for r in await cur.fetchall()}
    orphans = sorted(set(rows) - set(accepted))
    assert not orphans, f"batches recorded but never accepted: {orphans[:10]}"
    missing = sorted(set(accepted) - set(rows))
    assert not missing, f"accepted batches with no record: {missing[:10]}"
    unfinished = {b: r["status"] for b, r in rows.items() if r["status"] != "completed"}
    assert not unfinished, f"{len(unfinished)} accepted batches did not complete: {dict(list(unfinished.items())[:10])}"
    short = {b: (n, rows[b]["frame_count"], rows[b]["recorded"]) for b, n in accepted.items()
             if not n == rows[b]["frame_count"] == rows[b]["recorded"]}
    assert not short, f"batches whose frames (submitted, counted, recorded) differ: {dict(list(short.items())[:10])}"
    unsettled = {b: r["unsettled"] for b, r in rows.items() if r["unsettled"]}
    assert not unsettled, f"frames neither accepted nor rejected: {unsettled}"


async def check_predictions(pool: DbPool, batch_ids: list[str]) -> tuple[int, int, int, list[str]]:
    """Every accepted frame has exactly one prediction per model version in use, and no other frame
    has one; returns (frames, accepted frames, predictions, model versions)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT f.frame_id, f.status, array_remove(array_agg(p.model_version), NULL) AS versions "
            "FROM frames f LEFT JOIN predictions p USING (frame_id) WHERE f.batch_id = ANY(%s) GROUP BY f.frame_id",
            (batch_ids,))
        frames = await cur.fetchall()
    in_use = sorted({v for f in frames for v in f["versions"]})
    assert in_use, "no predictions at all"
    wrong = {f["frame_id"]: f["versions"] for f in frames
             if sorted(f["versions"]) != (in_use if f["status"] == "accepted" else [])}
    assert not wrong, (f"{len(wrong)} frames without exactly one prediction per model version {in_use}: "
                       f"{dict(list(wrong.items())[:10])}")
    accepted = sum(1 for f in frames if f["status"] == "accepted")
    return len(frames), accepted, sum(len(f["versions"]) for f in frames), in_use


async def review_tasks(pool: DbPool, batch_ids: list[str]) -> tuple[int, list[str], set[str]]:
    """(frames the batches sent to review, review task ids in the projection, the ids a review task of
    one of their accepted frames may have)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT coalesce(sum(sent_to_review), 0) AS n FROM batches "
                                 "WHERE batch_id = ANY(%s)", (batch_ids,))
        row = await cur.fetchone()
        cur = await conn.execute("SELECT review_id FROM review_tasks WHERE batch_id = ANY(%s)", (batch_ids,))
        tasks = [r["review_id"] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT frame_id FROM frames WHERE batch_id = ANY(%s) AND status = 'accepted'",
                                 (batch_ids,))
        possible = {review_workflow_id(r["frame_id"], reason) for r in await cur.fetchall() for reason in REASONS}
    return (row["n"] if row else 0), tasks, possible


async def review_workflows(client: Client, possible: set[str]) -> list[str]:
    """Ids of the review workflows in Temporal among `possible`, once per execution."""
    return [w.id async for w in client.list_workflows(f"WorkflowType = '{REVIEW_WORKFLOW}'") if w.id in possible]


async def reviews_consistent(pool: DbPool, client: Client, batch_ids: list[str]) -> int | None:
    """The number of review tasks once the batches, the projection and Temporal agree on them (one
    task per frame sent to review, one workflow per task, none started twice); None while they do not
    (the projection is written by the task's workflow, a moment after it starts)."""
    sent, tasks, possible = await review_tasks(pool, batch_ids)
    in_temporal = await review_workflows(client, possible)
    if sent == len(tasks) == len(in_temporal) and set(tasks) == set(in_temporal):
        return len(tasks) or -1  # -1: consistent, and no frame went to review
    return None


async def explain_reviews(pool: DbPool, client: Client, batch_ids: list[str]) -> str:
    sent, tasks, possible = await review_tasks(pool, batch_ids)
    in_temporal = await review_workflows(client, possible)
    twice = [w for w, n in Counter(in_temporal).items() if n > 1]
    return (f"sent to review {sent}, projection {len(tasks)}, Temporal {len(in_temporal)}; "
            f"only in the projection {sorted(set(tasks) - set(in_temporal))[:5]}, "
            f"only in Temporal {sorted(set(in_temporal) - set(tasks))[:5]}, started twice {twice[:5]}")


async def workflow_ids(client: Client, query: str) -> list[str]:
    return [w.id async for w in client.list_workflows(query)]


async def check_workflows(client: Client, batch_ids: list[str], site_id: str) -> None:
    """One batch workflow per accepted batch (of the site), every one completed; nothing of theirs
    running but review tasks."""
    of_site = f"WorkflowType = '{BATCH_WORKFLOW}' AND {sa.SITE.name} = '{site_id}'"
    batches = await workflow_ids(client, of_site)
    assert Counter(batches) == Counter(batch_ids), (
        f"batch workflows vs accepted batches: only in Temporal {sorted(set(batches) - set(batch_ids))[:5]}, "
        f"only accepted {sorted(set(batch_ids) - set(batches))[:5]}, "
        f"run twice {[b for b, n in Counter(batches).items() if n > 1][:5]}")
    unfinished = await workflow_ids(client, f"{of_site} AND ExecutionStatus != 'Completed'")
    assert not unfinished, f"batch workflows that did not complete: {unfinished[:10]}"
    # Ours: the batches' workflows and what they started (ids carry the batch id); the stack's own
    # schedules (drift checks) are not this data's.
    stuck = [w async for w in client.list_workflows("ExecutionStatus = 'Running'")
             if w.workflow_type != REVIEW_WORKFLOW and any(b in w.id for b in batch_ids)]
    assert not stuck, f"workflows still running: {[(w.workflow_type, w.id) for w in stuck][:10]}"
