"""Uploads: a caller puts frames under its own prefix, then names them in a JSON batch submission.
The two-step path for clients that upload as frames arrive and submit a batch later."""

from __future__ import annotations

import asyncio

from api.schemas.batches import Uploaded
from api.submission import MAX_FILENAME, upload_prefix
from infra.settings import Settings
from infra.store import InvalidKeyError, ObjectStore, StoreUnavailable, sha256_hex, validate_key
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
        digest = sha256_hex(data)
        if not await asyncio.to_thread(self._write_once, key, data, digest, media):
            raise UploadRefused(409, f"{name[:100]!r} is uploaded already with other bytes: uploads are write-once; "
                                     "put new frames under new names")
        return Uploaded(object_key=key, size_bytes=len(data), sha256=digest, content_type=media)

    def _write_once(self, key: str, data: bytes, digest: str, media: str) -> bool:
        """Store the upload unless the name holds bytes already: the same bytes again is the same
        upload (a retried PUT), other bytes are refused. Two PUTs of one name racing may both pass the
        check; a batch names a copy at the content address of what it read (api.submission), so
        whichever wins changes nothing that was submitted."""
        try:
            if self.store.exists(key):
                return sha256_hex(self.store.get(key)) == digest
            self.store.put(key, data, media)
        except InvalidKeyError:
            raise
        except Exception as exc:  # a full disk, an S3 endpoint away: 503, the client retries
            raise StoreUnavailable(f"the object store could not store the upload: {exc}") from exc
        return True
