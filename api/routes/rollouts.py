"""Rollouts: start, approve and resume (ML engineers); pause, abort and roll back (ML engineers and ops);
read (both). Every call that acts is audited; a refusal answers 4xx with its reason. A rollout changes
the model every site uses: keys scoped to some sites may read rollouts but not act on them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.auth import Principal, require_scope
from api.callers import RolloutDriver, RolloutReader, RolloutStopper
from api.deps import RolloutServiceDep, SettingsDep
from api.schemas.rollouts import Rollout, RolloutActionRequest, RolloutList, RolloutRequest
from api.services.rollouts import RolloutRefused, RolloutService
from infra.db import Row
from infra.settings import Settings
from workflows.rollout_types import RolloutState

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])
RolloutId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


def _rollout(rollout_id: str, row: Row | None, state: RolloutState | None, settings: Settings,
             **known: Any) -> Rollout:
    """The rollout from its row and its workflow's state, either of which may not exist yet; `known`:
    what the caller knows without them (a rollout just started has neither)."""
    base: dict[str, Any] = {**known, **(row or {})}
    if state is not None:
        base.update(rollout_id=state.rollout_id, candidate_version=state.candidate_version, status=state.status,
                    stage=state.stage, previous_version=state.previous_version,
                    split={"weights": state.split, "shadow_share": state.shadow_share},
                    gates=[asdict(g) for g in state.gates], reason=state.reason,
                    requested_by=state.requested_by, started_at=state.started_at or None,
                    finished_at=state.finished_at)
        base["state"] = asdict(state)
    return Rollout.model_validate({**base, "rollout_id": rollout_id, "url": f"/v1/rollouts/{rollout_id}",
                                   "temporal_ui_url": settings.workflow_ui_url(rollout_id)})


def _refused(exc: RolloutRefused) -> HTTPException:
    return HTTPException(exc.status, exc.reason)


@router.post("", response_model=Rollout, status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"description": "no such version"},
                        409: {"description": "a rollout is running (one at a time; the reason names it), or the "
                              "candidate is production already"},
                        422: {"description": "invalid plan"}},
             summary="Roll a registered version out: shadow, canary steps, promotion, gates at every stage")
async def start_rollout(body: RolloutRequest, caller: RolloutDriver, rollouts: RolloutServiceDep,
                        settings: SettingsDep) -> Rollout:
    require_scope(caller, None)
    try:
        rollout_id = await rollouts.start(body.candidate_version, body.overrides(), caller,
                                          f"{caller.name} ({caller.key_id})", body.reason)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except RolloutRefused as exc:
        raise _refused(exc) from None
    return _rollout(rollout_id, None, None, settings, candidate_version=body.candidate_version, status="running")


@router.get("", response_model=RolloutList, summary="Rollouts, newest first")
async def list_rollouts(caller: RolloutReader, rollouts: RolloutServiceDep, settings: SettingsDep,
                        status: Annotated[str | None, Query(
                            pattern="^(running|paused|awaiting_approval|promoted|rolled_back|aborted|failed"
                                    "|skipped)$")] = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50,
                        offset: Annotated[int, Query(ge=0)] = 0) -> RolloutList:
    rows = await rollouts.listing(status, limit, offset)
    return RolloutList(rollouts=[_rollout(r["rollout_id"], r, None, settings) for r in rows])


@router.get("/{rollout_id}", response_model=Rollout, responses={404: {"description": "no such rollout"}},
            summary="A rollout: stage, traffic split and gate results so far")
async def get_rollout(rollout_id: RolloutId, caller: RolloutReader, rollouts: RolloutServiceDep,
                      settings: SettingsDep) -> Rollout:
    try:
        row, state = await rollouts.get(rollout_id)
    except RolloutRefused as exc:
        raise _refused(exc) from None
    return _rollout(rollout_id, row, state, settings)


async def _act(rollout_id: str, action: str, caller: Principal, body: RolloutActionRequest | None,
               rollouts: RolloutService, settings: Settings) -> Rollout:
    require_scope(caller, None)
    try:
        state = await rollouts.act(rollout_id, action, caller, body.reason if body else "")
    except RolloutRefused as exc:
        raise _refused(exc) from None
    return _rollout(rollout_id, None, state, settings)


_ACTED: dict[int | str, dict[str, Any]] = {
    404: {"description": "no running rollout"}, 409: {"description": "not allowed in its state"},
    403: {"description": "this role may not"}}


@router.post("/{rollout_id}/approve", response_model=Rollout, responses=_ACTED,
             summary="Approve promotion (when the rollout asks for it)")
async def approve_rollout(rollout_id: RolloutId, caller: RolloutDriver, rollouts: RolloutServiceDep,
                          settings: SettingsDep, body: RolloutActionRequest | None = None) -> Rollout:
    return await _act(rollout_id, "approve", caller, body, rollouts, settings)


@router.post("/{rollout_id}/resume", response_model=Rollout, responses=_ACTED, summary="Resume a paused rollout")
async def resume_rollout(rollout_id: RolloutId, caller: RolloutDriver, rollouts: RolloutServiceDep,
                         settings: SettingsDep, body: RolloutActionRequest | None = None) -> Rollout:
    return await _act(rollout_id, "resume", caller, body, rollouts, settings)


@router.post("/{rollout_id}/pause", response_model=Rollout, responses=_ACTED,
             summary="Hold the rollout where it is (its split stays)")
async def pause_rollout(rollout_id: RolloutId, caller: RolloutStopper, rollouts: RolloutServiceDep,
                        settings: SettingsDep, body: RolloutActionRequest | None = None) -> Rollout:
    return await _act(rollout_id, "pause", caller, body, rollouts, settings)


@router.post("/{rollout_id}/abort", response_model=Rollout, responses=_ACTED,
             summary="Stop the rollout: everything back to the previous version")
async def abort_rollout(rollout_id: RolloutId, caller: RolloutStopper, rollouts: RolloutServiceDep,
                        settings: SettingsDep, body: RolloutActionRequest | None = None) -> Rollout:
    return await _act(rollout_id, "abort", caller, body, rollouts, settings)


@router.post("/{rollout_id}/rollback", response_model=Rollout, responses=_ACTED,
             summary="Roll back now: everything back to the previous version, rollout.rolled_back sent")
async def rollback_rollout(rollout_id: RolloutId, caller: RolloutStopper, rollouts: RolloutServiceDep,
                           settings: SettingsDep, body: RolloutActionRequest | None = None) -> Rollout:
    return await _act(rollout_id, "rollback", caller, body, rollouts, settings)
