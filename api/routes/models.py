"""Model versions and their model cards, for ML engineers and ops."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, HTTPException

from api.callers import ModelReader
from api.deps import ModelCatalogDep
from api.schemas.models import ModelDetail, ModelList, ModelSummary

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, summary="Every registered version with its aliases")
async def list_models(caller: ModelReader, catalog: ModelCatalogDep) -> ModelList:
    return ModelList(models=[ModelSummary.model_validate({**asdict(v), "url": f"/v1/models/{v.version}"})
                             for v in await catalog.versions()])


@router.get("/{version}", response_model=ModelDetail, responses={404: {"description": "no such version"}},
            summary="A version (or an alias: production, candidate, shadow) with its model card")
async def get_model(version: str, caller: ModelReader, catalog: ModelCatalogDep) -> ModelDetail:
    found = await catalog.version(version)
    if found is None:
        raise HTTPException(404, f"no model version or alias {version!r}")
    return ModelDetail.model_validate({**asdict(found), "url": f"/v1/models/{found.version}"})
