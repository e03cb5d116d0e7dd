"""Deletion requests (admin): delete a camera's, a site's, a time range's or some batches' frames and every
copy and reference of them, and follow the deletion. Retention periods per site (admin). Retiring a
model version (ML engineers), which ends the hold its training data had against retention."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Response, status

from api.audit import record_audit
from api.auth import Principal, require_roles, require_scope
from api.deps import DbDep, ModelCatalogDep, SettingsDep, StoreDep, TemporalDep
from api.schemas.deletions import (
    Deletion,
    DeletionRequest,
    RetentionPeriods,
    Retirement,
    RetireRequest,
    SiteRetention,
)
from api.services.deletions import DeletionRefused, DeletionService, RetentionService
from infra.db import Row
from infra.settings import Settings
from vision import lineage
from workflows.batch_types import KEY_PATTERN, NAME_PATTERN
from workflows.deletion_types import DeletionProgress

router = APIRouter(tags=["privacy"])

Admin = Annotated[Principal, Depends(require_roles())]  # admin only
ModelRetirer = Annotated[Principal, Depends(require_roles("ml-engineer"))]
DeletionId = Annotated[str, Path(max_length=300, pattern=r"^deletion:[A-Za-z0-9._-]+:[A-Za-z0-9._-]+$")]
SiteId = Annotated[str, Path(pattern=NAME_PATTERN)]


def _deletions(pool: DbDep, store: StoreDep, temporal: TemporalDep, settings: SettingsDep) -> DeletionService:
    return DeletionService(pool, store, temporal, settings)


def _retention(pool: DbDep, settings: SettingsDep) -> RetentionService:
    return RetentionService(pool, settings)


DeletionServiceDep = Annotated[DeletionService, Depends(_deletions)]
RetentionServiceDep = Annotated[RetentionService, Depends(_retention)]


def _deletion(row: Row, progress: DeletionProgress | None, settings: Settings) -> Deletion:
    base: dict[str, Any] = dict(row)
    if progress is not None:  # the running workflow's own account is the newer
        base.update(status=progress.status, frames_total=progress.frames_total or row["frames_total"],
                    frames_deleted=progress.frames_deleted, counts=asdict(progress.counts))
    return Deletion.model_validate({**base, "url": f"/v1/deletions/{row['deletion_id']}",
                                    "temporal_ui_url": settings.workflow_ui_url(row["deletion_id"])})


@router.post("/v1/deletions", response_model=Deletion, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"description": "the Idempotency-Key named this request already; nothing new started"},
                        404: {"description": "unknown camera, site or batch"},
                        409: {"description": "frames a model in rollout was trained on (send force), or the "
                                             "Idempotency-Key names a request of another scope"},
                        422: {"description": "no scope, an empty time range, or a scope that names no frames"}},
             summary="Delete every copy and reference of a camera's, site's, time range's or batches' frames")
async def request_deletion(body: DeletionRequest, caller: Admin, service: DeletionServiceDep, settings: SettingsDep,
                           response: Response,
                           idempotency_key: Annotated[str | None, Header(pattern=KEY_PATTERN)] = None) -> Deletion:
    require_scope(caller, body.site_id, body.camera_id)
    try:
        row, created = await service.request(body, idempotency_key, caller)
    except DeletionRefused as exc:
        raise HTTPException(exc.status, exc.reason) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return _deletion(row, None, settings)


@router.get("/v1/deletions/{deletion_id}", response_model=Deletion, responses={404: {"description": "no such request"}},
            summary="A deletion's progress, counts and the verifier's verdict")
async def get_deletion(deletion_id: DeletionId, caller: Admin, service: DeletionServiceDep,
                       settings: SettingsDep) -> Deletion:
    row, progress = await service.get(deletion_id)
    if row is None:
        raise HTTPException(404, f"no deletion {deletion_id!r}")
    require_scope(caller, row["scope"].get("site_id"), row["scope"].get("camera_id"))
    return _deletion(row, progress, settings)


def _site_retention(site_id: str, row: Row | None, service: RetentionService) -> SiteRetention:
    overrides = RetentionPeriods.model_validate(row or {})
    return SiteRetention(site_id=site_id, overrides=overrides, effective=service.effective(row),
                         updated_by=row["updated_by"] if row else "", updated_at=row["updated_at"] if row else None)


@router.get("/v1/sites/{site_id}/retention", response_model=SiteRetention,
            summary="A site's retention periods: its overrides and what applies")
async def get_site_retention(site_id: SiteId, caller: Admin, service: RetentionServiceDep) -> SiteRetention:
    require_scope(caller, site_id)
    return _site_retention(site_id, await service.get(site_id), service)


@router.put("/v1/sites/{site_id}/retention", response_model=SiteRetention,
            summary="Set a site's retention periods (null: the default; 0: kept for ever); audited")
async def put_site_retention(site_id: SiteId, body: RetentionPeriods, caller: Admin,
                             service: RetentionServiceDep) -> SiteRetention:
    require_scope(caller, site_id)
    return _site_retention(site_id, await service.put(site_id, body, caller), service)


@router.post("/v1/models/{version}/retire", response_model=Retirement,
             responses={404: {"description": "no such version"}},
             summary="Retire a version: the frames it was trained on are no longer held against retention")
async def retire_model(version: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")],
                       caller: ModelRetirer, pool: DbDep, catalog: ModelCatalogDep,
                       body: RetireRequest | None = None) -> Retirement:
    require_scope(caller, None)
    found = await catalog.version(version)
    if found is None or found.version != version:  # a version by name, not an alias
        raise HTTPException(404, f"no model version {version!r}")
    reason = body.reason if body else ""
    async with pool.connection() as conn, conn.transaction():
        row = await lineage.retire(conn, version, f"{caller.name} ({caller.key_id})", reason)
        await record_audit(conn, caller, "model.retire", f"models/{version}", details={"reason": reason})
    return Retirement.model_validate(row)
