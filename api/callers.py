"""Who may call which route, declared once: routes take one of these as a parameter, and the
reviewer page signs in with REVIEWERS. Admin passes every check (api.auth.allowed_roles)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.auth import Principal, require_roles

# Backend teams submit batches and camera frames.
INGESTERS = ("ingest",)
# Batches and their predictions: the teams that submit them, ML engineers, ops.
BATCH_READERS = ("ingest", "ml-engineer", "ops")
# A single frame and its image: the above, and reviewers, who look at frames all day.
FRAME_READERS = ("ingest", "reviewer", "ml-engineer", "ops")
# Review tasks: reviewers, and ML engineers who review too.
REVIEWERS = ("reviewer", "ml-engineer")
# Ops watch the review queue's health; they do not review.
REVIEW_WATCHERS = (*REVIEWERS, "ops")

IngestCaller = Annotated[Principal, Depends(require_roles(*INGESTERS))]
BatchReader = Annotated[Principal, Depends(require_roles(*BATCH_READERS))]
FrameReader = Annotated[Principal, Depends(require_roles(*FRAME_READERS))]
Reviewer = Annotated[Principal, Depends(require_roles(*REVIEWERS))]
ReviewWatcher = Annotated[Principal, Depends(require_roles(*REVIEW_WATCHERS))]
