"""Who may call which route, declared once: routes take one of these as a parameter.
Admin passes every check (see api.auth.require_roles)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.auth import Principal, require_roles

# Backend teams submit batches and camera frames.
IngestCaller = Annotated[Principal, Depends(require_roles("ingest"))]
# Batches and their predictions: the teams that submit them, ML engineers, ops.
BatchReader = Annotated[Principal, Depends(require_roles("ingest", "ml-engineer", "ops"))]
# A single frame and its image: the above, and reviewers, who look at frames all day.
FrameReader = Annotated[Principal, Depends(require_roles("ingest", "reviewer", "ml-engineer", "ops"))]
