"""Reading a submission off the HTTP request: the two formats of POST /v1/batches (multipart with the
image files, or JSON naming objects already in the store), a camera's single frame, and the checks
that answer 4xx with a reason naming the frame before anything is stored or started."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from fastapi import HTTPException, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.schemas.batches import BatchFromStore
from infra.settings import Settings
from infra.store import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectStore,
    StoreUnavailable,
    content_digest,
    frame_key,
    put_frames,
    redacted_frame_key,
    sha256_hex,
)
from infra.tables.api_keys import Principal
from infra.tables.webhook_subscriptions import validate_webhook_url
from vision.formats import sniff_image_type
from workflows.batch_types import (
    DEFAULT_MODEL,
    KEY_PATTERN,
    MAX_KEY,
    MAX_MODEL,
    MAX_NAME,
    MODEL_PATTERN,
    NAME_PATTERN,
    SubmittedFrame,
)

if TYPE_CHECKING:
    from vision.redaction import Redacted

# Whether a site's camera has redaction on (api.services.privacy.in_force, bound to the pool).
RedactionCheck = Callable[[str, str], Awaitable[bool]]

_NAME, _KEY, _MODEL = re.compile(NAME_PATTERN), re.compile(KEY_PATTERN), re.compile(MODEL_PATTERN)
MAX_FILENAME = 255


class FormLimits(TypedDict, total=False):
    """What FastAPI's `form_limits` take (its own TypedDict is private)."""

    max_files: int
    max_fields: int
    max_part_size: int


# Parts of a form, before any of it is read: a batch is at most 1024 files (settings cap it lower) and
# a handful of short text fields; nothing else is parsed.
FORM_LIMITS: FormLimits = {"max_files": 1024 + 1, "max_fields": 20, "max_part_size": 4096}
# Declared types that say nothing about the content; the workflow's decoder decides for those.
_UNTYPED = {"", "application/octet-stream"}


@dataclass
class Upload:
    """A frame's bytes as uploaded, not stored yet, and the key it will be stored under: its content
    address, or, once redacted, the redacted frame's key (infra.store.redacted_frame_key). `sha256` is
    always that of the bytes received: the frame's identity, whatever is stored."""

    filename: str
    content_type: str
    data: bytes
    sha256: str = ""
    redaction_revision: int | None = None

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or sha256_hex(self.data)

    @property
    def received_key(self) -> str:
        """The content address of the bytes received: what names the frame in a request's fingerprint."""
        return frame_key(self.sha256)

    @property
    def object_key(self) -> str:
        if self.redaction_revision is not None:
            return redacted_frame_key(self.sha256, self.redaction_revision)
        return self.received_key

    def redacted(self, result: Redacted) -> None:
        """From now on the upload holds the redacted frame only: the received bytes are dropped here, so
        nothing after this point can store them."""
        self.data, self.content_type, self.redaction_revision = result.data, result.content_type, result.revision


@dataclass
class Submission:
    """A batch as the caller asked for it, checked. Exactly one of `uploads` (multipart: bytes to store)
    and `stored` (JSON: objects already in the store) is set."""

    camera_id: str
    site_id: str
    idempotency_key: str
    webhook_url: str | None
    uploads: list[Upload] | None = None
    stored: list[SubmittedFrame] | None = None
    model: str = DEFAULT_MODEL  # the alias or version the batch names; checked against the registry on submit

    @property
    def frame_count(self) -> int:
        return len(self.uploads if self.uploads is not None else self.stored or [])

    def frames(self) -> list[SubmittedFrame]:
        """The frames in order, named by the keys they are (or will be) stored under."""
        if self.uploads is not None:
            return [SubmittedFrame(u.object_key, len(u.data), u.filename, u.content_type) for u in self.uploads]
        return list(self.stored or [])

    @property
    def redaction_revision(self) -> int | None:
        """The revision the frames were redacted under (all of a batch's frames are, or none)."""
        return self.uploads[0].redaction_revision if self.uploads else None

    def received_digests(self) -> list[str]:
        """The sha256 of each frame as received, in order ("" where only the key can tell, see
        infra.tables.frames.NewFrame)."""
        if self.uploads is not None:
            return [u.sha256 for u in self.uploads]
        return [content_digest(f.object_key) for f in self.stored or []]

    def fingerprint(self) -> str:
        """What the request asked for: the same idempotency key with other frames is another request. Named
        by the bytes received (not by where a redacted frame is stored), so the same request again is the
        same request whether or not, and under whichever revision, its frames are redacted. A batch naming
        a model other than production is another request than the same frames for production (a batch
        naming none, or production, has the fingerprint batches had before they could name one)."""
        keys = ([u.received_key for u in self.uploads] if self.uploads is not None
                else [f.object_key for f in self.stored or []])
        if self.model != DEFAULT_MODEL:
            keys.append(f"model={self.model}")
        return sha256_hex("\n".join(keys).encode())


def check_id(name: str, value: str) -> str:
    """A camera or site id: 1-64 plain characters."""
    if not _NAME.match(value):
        raise HTTPException(422, f"{name} {value[:100]!r} must be 1-{MAX_NAME} characters of letters, digits, "
                                 "'.', '_' or '-', starting with a letter or digit")
    return value


def check_key(value: str) -> str:
    """An idempotency key: 1-128 plain characters."""
    if not _KEY.match(value):
        raise HTTPException(422, f"idempotency_key {value[:140]!r} must be 1-{MAX_KEY} characters of letters, "
                                 "digits, '.', '_' or '-', starting with a letter or digit")
    return value


def model_refused(value: str, reason: str) -> HTTPException:
    """422 naming the field, as the review API's refusals do."""
    return HTTPException(422, {"error": "InvalidModel", "field": "model",
                               "message": f"model {value[:100]!r} {reason}"})


def check_model(value: str) -> str:
    """An alias or a version name: 1-64 plain characters (whether it exists, BatchService.submit asks)."""
    if not _MODEL.match(value):
        raise model_refused(value, f"must be an alias or a version name: 1-{MAX_MODEL} characters of letters, "
                                   "digits, '.', '_' or '-', starting with a letter or digit")
    return value


def check_count(count: int, settings: Settings) -> None:
    if count == 0:
        raise HTTPException(422, "a batch needs at least one frame")
    if count > settings.max_frames_per_batch:
        raise HTTPException(413, f"{count} frames exceed the limit of {settings.max_frames_per_batch} per batch")


def check_webhook_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return validate_webhook_url(url)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


async def read_uploads(uploads: list[UploadFile], settings: Settings) -> list[Upload]:
    check_count(len(uploads), settings)
    frames = []
    for position, upload in enumerate(uploads):
        name = upload.filename or "unnamed"
        if len(name) > MAX_FILENAME:
            raise HTTPException(422, f"frame {position}: its filename is longer than {MAX_FILENAME} characters")
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        if declared not in _UNTYPED and declared not in settings.accepted_content_types:
            raise HTTPException(
                415, f"frame {position} ({name}): type {declared} is not accepted; use one of "
                + ", ".join(settings.accepted_content_types),
            )
        data = await upload.read(settings.max_frame_bytes + 1)
        if len(data) > settings.max_frame_bytes:
            raise HTTPException(413, f"frame {position} ({name}) exceeds the limit of {settings.max_frame_bytes} bytes")
        frames.append(Upload(upload.filename or "", declared or "application/octet-stream", data))
    return frames


def upload_prefix(caller: Principal) -> str:
    """Where a caller's own uploads live: a JSON submission may name objects under it and nowhere else
    (not other callers' uploads, not model files)."""
    return f"uploads/{caller.key_id}/"


def _check_stored(store: ObjectStore, body: BatchFromStore, settings: Settings,
                  caller: Principal) -> list[SubmittedFrame]:
    """The named uploads, each copied to the content address of its bytes as they are now: the batch
    names those copies, never the upload names, so putting other bytes under a name later changes
    nothing a batch, a reviewer or a training snapshot holds."""
    check_count(len(body.frames), settings)
    submitted = []
    owned = upload_prefix(caller)
    for position, frame in enumerate(body.frames):
        if not frame.object_key.startswith(owned):
            raise HTTPException(422, f"frame {position}: {frame.object_key[:100]!r} is not one of your uploads "
                                     f"(under {owned}): upload it with PUT /v1/uploads/{{name}} first")
        try:
            size = store.size(frame.object_key)
            if size > settings.max_frame_bytes:
                raise HTTPException(413, f"frame {position} ({frame.object_key}) exceeds the limit of "
                                         f"{settings.max_frame_bytes} bytes")
            data = store.get(frame.object_key)
        except InvalidKeyError as exc:
            raise HTTPException(422, f"frame {position}: {exc}") from None
        except ObjectNotFoundError:
            raise HTTPException(422, f"frame {position}: no object {frame.object_key!r} in the store") from None
        except HTTPException:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"the object store could not read {frame.object_key}: {exc}") from exc
        key, media = frame_key(sha256_hex(data)), sniff_image_type(data)
        put_frames(store, [(key, data, media)])
        submitted.append(SubmittedFrame(key, len(data), frame.filename or frame.object_key.rsplit("/", 1)[-1], media))
    return submitted


async def read_submission(request: Request, store: ObjectStore, settings: Settings, caller: Principal,
                          redacting: RedactionCheck | None = None) -> Submission:
    """The request's batch, or a 4xx that says what is wrong with it. The idempotency key is a field,
    else the Idempotency-Key header, else a digest of the frames (the same frames, the same batch).
    `redacting`: whether a camera has redaction on; a JSON batch naming uploads of such a camera is
    refused before anything is copied (an upload is stored as sent, before any camera is named)."""
    content_type = request.headers.get("content-type", "")
    header_key = request.headers.get("Idempotency-Key")
    if content_type.startswith("application/json"):
        try:
            body = BatchFromStore.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
        if redacting is not None and await redacting(body.site_id, body.camera_id):
            raise HTTPException(422, f"camera_id {body.camera_id!r} of site {body.site_id!r} has redaction on: its "
                                     "frames are redacted before they are stored, and an upload is stored as sent; "
                                     "send them as multipart/form-data files to POST /v1/batches instead")
        stored = await asyncio.to_thread(_check_stored, store, body, settings, caller)
        key = body.idempotency_key or header_key or sha256_hex("\n".join(f.object_key for f in stored).encode())[:32]
        submission = Submission(body.camera_id, body.site_id, key, body.webhook_url, stored=stored,
                                model=body.model or DEFAULT_MODEL)
    elif content_type.startswith("multipart/form-data"):
        # `async with`: the form's spooled files are closed once their bytes are read, whatever happens.
        async with request.form(max_files=settings.max_frames_per_batch + 1, max_fields=FORM_LIMITS["max_fields"],
                                max_part_size=FORM_LIMITS["max_part_size"]) as form:
            camera_id = str(form.get("camera_id") or "")
            if not camera_id:
                raise HTTPException(422, "camera_id is required")
            uploads = await read_uploads([f for f in form.getlist("frames") if isinstance(f, UploadFile)], settings)
            key = str(form.get("idempotency_key") or "") or header_key or sha256_hex(
                b"".join(bytes.fromhex(u.sha256) for u in uploads))[:32]
            submission = Submission(camera_id, str(form.get("site_id") or "default"), key,
                                    str(form.get("webhook_url") or "") or None, uploads=uploads,
                                    model=str(form.get("model") or "") or DEFAULT_MODEL)
    else:
        raise HTTPException(415, "send multipart/form-data with image files, or application/json naming stored objects")
    check_id("camera_id", submission.camera_id)
    check_id("site_id", submission.site_id)
    check_key(submission.idempotency_key)
    check_model(submission.model)
    submission.webhook_url = check_webhook_url(submission.webhook_url)
    return submission
