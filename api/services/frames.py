"""Single frames: prediction history, routes, a time-limited image URL, and the image bytes behind the
URL the API signs for the directory store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from api.image_urls import check_signature, image_url
from api.schemas.batches import FrameDetail, Prediction
from infra.db import DbPool
from infra.secret_key import secret_key
from infra.settings import Settings
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables import batches, frame_routes, frames, predictions
from infra.tables.api_keys import Principal


class FrameNotFound(LookupError):
    pass


class ImageRefused(PermissionError):
    """An expired or forged image URL."""


@dataclass
class FrameImage:
    data: bytes
    media_type: str


class FrameService:
    def __init__(self, pool: DbPool, store: ObjectStore, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.settings = settings

    async def detail(self, frame_id: str, base_url: str, caller: Principal) -> FrameDetail:
        async with self.pool.connection() as conn:
            frame = await frames.get(conn, frame_id)
            batch = await batches.get(conn, frame["batch_id"]) if frame else None
            # Out of the caller's scope reads as absent: a key of one site learns nothing of another's.
            if frame is None or batch is None or caller.scope_refusal(batch["site_id"], batch["camera_id"]):
                raise FrameNotFound(f"no frame {frame_id!r}")
            history = [Prediction(**row) for row in await predictions.of_frame(conn, frame_id)]
            routes = await frame_routes.of_frame(conn, frame_id)
        if frame["status"] == "rejected":  # not an image we accepted: no URL to its bytes
            return FrameDetail(**frame, predictions=history, routes=routes)
        url, expires = image_url(secret_key(self.settings), base_url, frame_id, self.settings.image_url_ttl_s)
        return FrameDetail(**frame, predictions=history, routes=routes, image_url=url,
                           image_url_expires_at=datetime.fromtimestamp(expires, UTC))

    async def image(self, frame_id: str, expires: int, signature: str) -> FrameImage:
        refused = check_signature(secret_key(self.settings), frame_id, expires, signature)
        if refused:
            raise ImageRefused(refused)
        async with self.pool.connection() as conn:
            frame = await frames.get(conn, frame_id)
        if frame is None or frame["status"] == "rejected":
            raise FrameNotFound(f"no image of frame {frame_id!r}")
        try:
            data = await asyncio.to_thread(self.store.get, frame["object_key"])
        except ObjectNotFoundError:
            raise FrameNotFound(f"the image of frame {frame_id!r} is gone from the store") from None
        media = frame["content_type"] if frame["content_type"].startswith("image/") else "application/octet-stream"
        return FrameImage(data, media)
