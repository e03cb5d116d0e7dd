"""Retraining runs: trigger (ML engineers), follow (ML engineers and ops), cancel (ML engineers).
Triggers and cancels are audited. A run trains the model every site uses: keys scoped to some sites
may follow runs but not start or stop them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.auth import require_scope
from api.callers import Retrainer, RetrainingReader
from api.deps import RetrainingServiceDep, SettingsDep
from api.schemas.retraining import RetrainingList, RetrainingRequest, RetrainingRun, RetrainingTriggered
from api.services.retraining import RunNotFound
from infra.db import Row
from infra.settings import Settings
from workflows.retraining_types import RetrainingProgress, RetrainingTrigger

router = APIRouter(prefix="/v1/retraining", tags=["retraining"])


def _run(workflow_id: str, row: Row | None, status: str | None, progress: RetrainingProgress | None,
         settings: Settings) -> RetrainingRun:
    # Before its first activity ran (no row) and with no worker to answer the query, the id still names
    # the snapshot: retraining-<snapshot id>.
    snapshot_id = progress.snapshot_id if progress else workflow_id.removeprefix("retraining-")
    base: dict[str, Any] = dict(row or {"workflow_id": workflow_id, "snapshot_id": snapshot_id})
    if status:
        base["status"] = status
    base["progress"] = progress
    return RetrainingRun.model_validate({**base, "url": f"/v1/retraining/{workflow_id}",
                                         "temporal_ui_url": settings.workflow_ui_url(workflow_id)},
                                        from_attributes=True)


@router.post("", response_model=RetrainingTriggered, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"model": RetrainingTriggered, "description": "a run for this snapshot exists: "
                                                                            "nothing was started"}},
             summary="Retrain on the base set and every label reviewed so far")
async def trigger_retraining(body: RetrainingRequest, caller: Retrainer, retraining: RetrainingServiceDep,
                             settings: SettingsDep, response: Response) -> RetrainingTriggered:
    require_scope(caller, None)
    try:
        triggered = await retraining.trigger(body.overrides(), RetrainingTrigger(
            "manual", f"{caller.name} ({caller.key_id})", note=body.note), caller)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if not triggered.started:
        response.status_code = status.HTTP_200_OK
    return RetrainingTriggered(workflow_id=triggered.workflow_id, snapshot_id=triggered.snapshot_id,
                               reviewed_frames=triggered.reviewed_frames, started=triggered.started,
                               url=f"/v1/retraining/{triggered.workflow_id}",
                               temporal_ui_url=settings.workflow_ui_url(triggered.workflow_id))


@router.get("", response_model=RetrainingList, summary="Retraining runs, newest first")
async def list_retraining(caller: RetrainingReader, retraining: RetrainingServiceDep, settings: SettingsDep,
                          status: Annotated[str | None, Query(pattern="^(running|completed|failed|cancelled)$")] = None,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50,
                          offset: Annotated[int, Query(ge=0)] = 0) -> RetrainingList:
    rows = await retraining.listing(status, limit, offset)
    return RetrainingList(runs=[_run(r["workflow_id"], r, None, None, settings) for r in rows])


@router.get("/{workflow_id}", response_model=RetrainingRun, responses={404: {"description": "no such run"}},
            summary="A run: its record, and while it runs its progress (epoch, loss, ETA)")
async def get_retraining(workflow_id: str, caller: RetrainingReader, retraining: RetrainingServiceDep,
                         settings: SettingsDep) -> RetrainingRun:
    try:
        row, state, progress = await retraining.get(workflow_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return _run(workflow_id, row, state, progress, settings)


@router.post("/{workflow_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"description": "no such run"}, 409: {"description": "the run is not running"}},
             summary="Stop a run; training stops within seconds")
async def cancel_retraining(workflow_id: str, caller: Retrainer, retraining: RetrainingServiceDep) -> dict[str, str]:
    require_scope(caller, None)
    try:
        running = await retraining.cancel(workflow_id, caller)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    if not running:
        raise HTTPException(409, f"retraining run {workflow_id!r} is not running")
    return {"workflow_id": workflow_id, "status": "cancel requested"}
