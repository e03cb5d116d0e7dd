"""Uploads: a caller puts frames under its own prefix, then names them in a JSON batch submission.
The two-step path for clients that upload as frames arrive and submit a batch later."""

from __future__ import annotations

import asyncio

from api.schemas.batches import Uploaded
from api.submission import MAX_FILENAME, upload_prefix
from infra.settings import Settings
from infra.store import InvalidKeyError, ObjectStore, sha256_hex, validate_key
from infra.tables.api_keys import Principal
from vision.formats import sniff_image_type


class UploadRefused(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Uploads:
    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def put(self, caller: Principal, name: str, data: bytes) -> Uploaded:
        if len(name) > MAX_FILENAME:
            raise UploadRefused(422, f"an upload's name is at most {MAX_FILENAME} characters")
        key = upload_prefix(caller) + name
        try:
            validate_key(key)
        except InvalidKeyError:
            raise UploadRefused(422, f"{name[:100]!r} is not a valid name: letters, digits, '.', '_', '=' and '-', "
                                     "not starting with '.'") from None
        if len(data) > self.settings.max_frame_bytes:
            raise UploadRefused(413, f"the frame exceeds the limit of {self.settings.max_frame_bytes} bytes")
        media = sniff_image_type(data)
        if media not in self.settings.accepted_content_types:
            accepted = ", ".join(self.settings.accepted_content_types)
            raise UploadRefused(415, f"not a {accepted} image, by its first bytes")
        await asyncio.to_thread(self.store.put, key, data, media)
        return Uploaded(object_key=key, size_bytes=len(data), sha256=sha256_hex(data), content_type=media)
