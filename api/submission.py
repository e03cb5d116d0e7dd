"""Shared by the routes that take frames in: id checks, upload limits, and what a batch runs under."""

from __future__ import annotations

import re

from fastapi import HTTPException
from starlette.datastructures import UploadFile

from infra.settings import Settings
from infra.webhook_subscriptions import validate_webhook_url
from workflows.batch_types import ID_PATTERN, RoutingRules

_ID = re.compile(ID_PATTERN)
# Declared types that say nothing about the content; the workflow's decoder decides for those.
_UNTYPED = {"", "application/octet-stream"}


def routing_rules(settings: Settings) -> RoutingRules:
    return RoutingRules(
        review_below=settings.review_confidence_threshold,
        qa_sample_rate=settings.qa_sample_rate,
        alert_at_or_above=settings.alert_confidence_threshold,
        ok_labels=list(settings.ok_labels),
        reviews_required=settings.reviews_required,
    )


def ui_url(settings: Settings, workflow_id: str) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def check_id(name: str, value: str) -> None:
    if not _ID.match(value):
        raise HTTPException(422, f"{name} {value!r} must be 1-128 characters of letters, digits, '.', '_' or '-'")


def check_count(count: int, settings: Settings) -> None:
    if count == 0:
        raise HTTPException(422, "a batch needs at least one frame")
    if count > settings.max_frames_per_batch:
        raise HTTPException(413, f"{count} frames exceed the limit of {settings.max_frames_per_batch} per batch")


async def read_uploads(uploads: list[UploadFile], settings: Settings) -> list[tuple[UploadFile, bytes]]:
    check_count(len(uploads), settings)
    frames = []
    for position, upload in enumerate(uploads):
        name = upload.filename or "unnamed"
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        if declared not in _UNTYPED and declared not in settings.accepted_content_types:
            raise HTTPException(
                415, f"frame {position} ({name}): type {declared} is not accepted; use one of "
                + ", ".join(settings.accepted_content_types),
            )
        data = await upload.read(settings.max_frame_bytes + 1)
        if len(data) > settings.max_frame_bytes:
            raise HTTPException(413, f"frame {position} ({name}) exceeds the limit of {settings.max_frame_bytes} bytes")
        frames.append((upload, data))
    return frames




def check_webhook_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return validate_webhook_url(url)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
