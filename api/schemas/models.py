"""Model versions and their cards as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ModelSummary(BaseModel):
    version: str
    number: int
    architecture: str
    aliases: list[str]
    parent_version: str | None = None
    dataset_snapshot_id: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_by: str
    created_at: datetime
    url: str


class ModelDetail(ModelSummary):
    manifest_key: str
    manifest_sha256: str
    signature_key_id: str | None = Field(None, description="the Ed25519 key that signed the manifest")
    training_run_id: str | None = None
    card: dict[str, Any] = Field(description="data snapshot with counts by class and source, parameters, metrics "
                                             "on named sets, parent, why it was trained, who and when")
    data: dict[str, Any] = Field(default_factory=dict, description="its training data's life: `retention_hold` "
                                 "(frames held against retention while it is not retired), `retired`, and "
                                 "`deletions` (each deletion that removed frames it was trained on: when, by "
                                 "whom, how many)")


class ModelList(BaseModel):
    models: list[ModelSummary]
