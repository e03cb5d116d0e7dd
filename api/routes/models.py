"""Model versions and their model cards, for ML engineers and ops; and the files of a version that edge
agents download (with an ingest key) to decide beside the line."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from api.auth import Principal, require_roles
from api.callers import ModelReader
from api.deps import DbDep, ModelCatalogDep, StoreDep
from api.schemas.models import ModelDetail, ModelList, ModelSummary
from api.services.models import DOWNLOADABLE, ArtifactNotFound
from vision import lineage

router = APIRouter(prefix="/v1/models", tags=["models"])

# Edge agents pull the production model with the ingest key they upload with; ML engineers may fetch
# the same files. Models belong to no site, so a key scoped to sites may download them too.
ModelDownloader = Annotated[Principal, Depends(require_roles("ingest", "ml-engineer"))]


@router.get("", response_model=ModelList, summary="Every registered version with its aliases")
async def list_models(caller: ModelReader, catalog: ModelCatalogDep) -> ModelList:
    return ModelList(models=[ModelSummary.model_validate({**asdict(v), "url": f"/v1/models/{v.version}"})
                             for v in await catalog.versions()])


@router.get("/{version}", response_model=ModelDetail, responses={404: {"description": "no such version"}},
            summary="A version (or an alias: production, candidate, shadow) with its model card")
async def get_model(version: str, caller: ModelReader, catalog: ModelCatalogDep, pool: DbDep,
                    store: StoreDep) -> ModelDetail:
    found = await catalog.version(version)
    if found is None:
        raise HTTPException(404, f"no model version or alias {version!r}")
    async with pool.connection() as conn:  # the hold on its training data, retirement, deletions (issue 24)
        data = await lineage.model_data(conn, store, found.version, found.dataset_snapshot_id)
    return ModelDetail.model_validate({**asdict(found), "url": f"/v1/models/{found.version}", "data": data})


_ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the file's bytes; `ETag` is the sha256 recorded for it (the registry's for the "
                         "manifest, the signed manifest's for the others), `X-Sightline-Model-Version` the version",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    304: {"description": "`If-None-Match` names the current file: the alias has not moved"},
    404: {"description": "no such version, alias or file"},
}


@router.get("/{ref}/artifacts/{name}", response_class=Response, responses=_ARTIFACT_RESPONSES,
            summary=f"A file of a version (or an alias's version) for edge agents: {', '.join(DOWNLOADABLE)}")
async def model_artifact(ref: str, name: str, request: Request, caller: ModelDownloader, catalog: ModelCatalogDep,
                         store: StoreDep) -> Response:
    """The bytes as the store holds them: the agent checks the manifest against its ETag and its
    Ed25519 signature, and every file against the signed manifest, before it uses any of them. Poll
    `/v1/models/production/artifacts/manifest.json` with `If-None-Match` to learn when the alias moves."""
    try:
        artifact = await catalog.artifact(ref, name, store)
        headers = {"X-Sightline-Model-Version": artifact.version, "Cache-Control": "no-cache"}
        if artifact.sha256 and request.headers.get("if-none-match") == f'"{artifact.sha256}"':
            return Response(status_code=304, headers={**headers, "ETag": f'"{artifact.sha256}"'})
        data, digest = await catalog.read(artifact, store)
    except ArtifactNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(data, media_type=artifact.media_type, headers={**headers, "ETag": f'"{digest}"'})
