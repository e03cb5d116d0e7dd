"""Privacy settings: a site's default and each camera's own, read and changed by ops (and admin); read by
ingest keys too (the edge agent redacts with them). Every change is audited and makes a new revision."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import require_scope
from api.callers import PrivacyManager, PrivacyReader
from api.deps import PrivacyServiceDep
from api.schemas.privacy import PrivacyRevision, PrivacySettings, PrivacySettingsRequest
from api.services.privacy import settings_of
from infra.db import Row
from workflows.batch_types import NAME_PATTERN

router = APIRouter(prefix="/v1/sites", tags=["privacy"])
SiteId = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]
CameraId = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "this role may not, or the key's scope does not cover the site or camera"},
    422: {"description": "a region outside 0..1, a polygon of fewer than 3 points, an unknown mode (the detail "
                         "names the field)"}}


def _revision(row: Row | None) -> PrivacyRevision | None:
    if row is None:
        return None
    return PrivacyRevision(**{**row, "camera_id": row["camera_id"] or None})


def _answer(site_id: str, camera_id: str | None, own: Row | None, effective: Row | None,
            created: bool | None = None) -> PrivacySettings:
    return PrivacySettings(site_id=site_id, camera_id=camera_id, settings=_revision(own),
                           in_force=_revision(effective), redacting=settings_of(effective) is not None,
                           created=created)


@router.get("/{site_id}/privacy", response_model=PrivacySettings, responses=_RESPONSES,
            summary="A site's default privacy settings (cameras without their own follow them)")
async def get_site_privacy(site_id: SiteId, caller: PrivacyReader, privacy: PrivacyServiceDep) -> PrivacySettings:
    require_scope(caller, site_id)
    own, effective = await privacy.read(site_id, None)
    return _answer(site_id, None, own, effective)


@router.put("/{site_id}/privacy", response_model=PrivacySettings, responses=_RESPONSES,
            summary="Set a site's default privacy settings: a new revision (the same settings again change nothing)")
async def put_site_privacy(site_id: SiteId, body: PrivacySettingsRequest, caller: PrivacyManager,
                           privacy: PrivacyServiceDep) -> PrivacySettings:
    require_scope(caller, site_id)
    row, created = await privacy.put(site_id, None, body.faces, [r.as_json() for r in body.regions], body.reason,
                                     caller)
    return _answer(site_id, None, row, row, created)


@router.get("/{site_id}/cameras/{camera_id}/privacy", response_model=PrivacySettings, responses=_RESPONSES,
            summary="A camera's privacy settings: its own, and what is in force for it")
async def get_camera_privacy(site_id: SiteId, camera_id: CameraId, caller: PrivacyReader,
                             privacy: PrivacyServiceDep) -> PrivacySettings:
    require_scope(caller, site_id, camera_id)
    own, effective = await privacy.read(site_id, camera_id)
    return _answer(site_id, camera_id, own, effective)


@router.put("/{site_id}/cameras/{camera_id}/privacy", response_model=PrivacySettings, responses=_RESPONSES,
            summary="Set a camera's own privacy settings (they replace the site's default for it): a new revision")
async def put_camera_privacy(site_id: SiteId, camera_id: CameraId, body: PrivacySettingsRequest,
                             caller: PrivacyManager, privacy: PrivacyServiceDep) -> PrivacySettings:
    require_scope(caller, site_id, camera_id)
    row, created = await privacy.put(site_id, camera_id, body.faces, [r.as_json() for r in body.regions],
                                     body.reason, caller)
    return _answer(site_id, camera_id, row, row, created)
