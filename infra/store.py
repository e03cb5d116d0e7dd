"""Object storage behind one small interface: a local directory store and an S3 store (minio SDK).

Frames are content-addressed: the key holds the sha256 of the bytes, so storing the same frame twice
is a no-op and a key names exactly one content forever.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import itertools
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

# Keys are relative, slash-separated paths of safe characters; no empty, "." or ".." segments.
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


class InvalidKeyError(ValueError):
    pass


class ObjectNotFoundError(KeyError):
    pass


class StoreUnavailable(RuntimeError):
    """The store could not take or give bytes just now (a full or broken disk, an S3 endpoint away):
    a moment for the caller to retry, never a reason to lose what was asked (the API answers 503)."""


def validate_key(key: str) -> str:
    if not key or len(key) > 512 or key.startswith("/") or "\\" in key:
        raise InvalidKeyError(f"invalid object key {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise InvalidKeyError(f"invalid object key {key!r}: bad segment {segment!r}")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_key(digest: str) -> str:
    """Content-addressed key of a frame; a two-character fan-out keeps directories small."""
    return f"frames/sha256/{digest[:2]}/{digest}"


_FRAME_KEY = re.compile(r"^frames/sha256/([0-9a-f]{2})/([0-9a-f]{64})$")


def content_digest(key: str) -> str:
    """The sha256 a content-addressed frame key names; "" for a key of another form."""
    match = _FRAME_KEY.match(key)
    return match.group(2) if match and match.group(2).startswith(match.group(1)) else ""


def redacted_frame_key(received_digest: str, revision: int) -> str:
    """Where a redacted frame is stored: named by the sha256 of the bytes RECEIVED and the privacy
    settings revision that redacted them, never at frame_key(received): that address means "these exact
    bytes", which a camera without redaction may store raw, so a redacted frame there could be served as
    the raw one (or the raw one as it). Under this prefix only the redaction path writes, so the key
    cannot lead to raw bytes; and it is a function of what was received and of an immutable revision
    (redaction is deterministic), so a resubmission of the same bytes lands on the same key, idempotent
    as content addresses are. The frame's identity stays the received sha256 (frames.sha256); the
    redacted bytes' own digest is not what identifies a frame."""
    return f"frames/redacted/r{revision}/{received_digest[:2]}/{received_digest}"


_REDACTED_KEY = re.compile(r"^frames/redacted/r([0-9]{1,18})/([0-9a-f]{2})/([0-9a-f]{64})$")


def redacted_key_parts(key: str) -> tuple[str, int] | None:
    """(received sha256, revision) a redacted frame key names; None for a key of another form."""
    match = _REDACTED_KEY.match(key)
    if not match or not match.group(3).startswith(match.group(2)):
        return None
    return match.group(3), int(match.group(1))


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def put_many(self, objects: Sequence[tuple[str, bytes, str]]) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def url(self, key: str, expires: timedelta = timedelta(minutes=15)) -> str | None: ...


def put_frame(store: ObjectStore, data: bytes, content_type: str = "application/octet-stream") -> str:
    """Store frame bytes under their sha256 and return the key; idempotent."""
    key = frame_key(sha256_hex(data))
    put_frames(store, [(key, data, content_type)])
    return key


def put_frames(store: ObjectStore, frames: Sequence[tuple[str, bytes, str]]) -> None:
    """(key, bytes, content type) of frames whose content addresses the caller has just computed from
    these bytes, stored together, each unless it is there already; idempotent. One call per group: a
    thread hand-off per frame cost more than writing it, and a directory store makes the whole group
    durable with two syncs instead of one per frame."""
    try:
        store.put_many([(key, data, content_type) for key, data, content_type in frames if not store.exists(key)])
    except InvalidKeyError:
        raise
    except Exception as exc:  # OSError from a directory, S3Error or urllib3's from an endpoint
        raise StoreUnavailable(f"the object store could not store a frame: {type(exc).__name__}: {exc}") from exc


def _sync_filesystem(path: Path) -> None:
    """Everything written to the filesystem holding `path` reaches the disk (syncfs(2); sync(2) where
    there is no syncfs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _libc_with_syncfs() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
    except (OSError, AttributeError):  # no libc with syncfs (not Linux): sync(2) it is
        return None
    return libc


_LIBC = _libc_with_syncfs()
_TEMP_NUMBERS = itertools.count()


class LocalStore:
    """A directory of files. Writes go to a temp file in the same directory and are renamed into
    place, so a reader never sees a half-written object, even if the writer is killed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # validate_key refuses absolute keys and every "", "." and ".." segment, so the joined path
        # is inside root by construction. No resolve(): its lstat per path component cost more than
        # reading the frame on the serving hot path.
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_many(self, objects: Sequence[tuple[str, bytes, str]]) -> None:
        """Write every object, then make them durable together: their bytes are synced before any name
        points at them (a crash never leaves a name holding a partial frame, which a content-addressed
        store would trust forever), and the names after. Two syncs of the filesystem for a whole batch
        cost half the CPU of an fsync per frame."""
        if len(objects) <= 1:
            for key, data, content_type in objects:
                self.put(key, data, content_type)
            return
        staged: list[tuple[str, Path]] = []
        made: set[Path] = set()
        try:
            for key, data, _ in objects:
                path = self._path(key)
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                # A name of this process's own (mkstemp draws random names, a tenth of the API's CPU here):
                # O_EXCL still refuses one that exists.
                tmp = str(path.parent / f".tmp-{path.name}-{os.getpid()}-{next(_TEMP_NUMBERS)}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                staged.append((tmp, path))
            _sync_filesystem(self.root)
            for tmp, path in staged:
                os.replace(tmp, path)
            staged.clear()
            _sync_filesystem(self.root)
        finally:
            for tmp, _ in staged:
                Path(tmp).unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def url(self, key: str, expires: timedelta = timedelta(minutes=15)) -> str | None:
        # A directory has no URL of its own; the API serves these bytes itself.
        return None


class S3Store:
    """Any S3-compatible endpoint (MinIO in production) through the minio SDK."""

    def __init__(
        self,
        bucket: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str = "us-east-1",
        prefix: str = "",
    ) -> None:
        from minio import Minio

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        if not self.client.bucket_exists(bucket):
            try:
                self.client.make_bucket(bucket)
            except Exception as exc:  # another process created it between the check and now
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(self.bucket, self._name(key), io.BytesIO(data), len(data), content_type=content_type)

    def put_many(self, objects: Sequence[tuple[str, bytes, str]]) -> None:
        for key, data, content_type in objects:  # the server makes each object durable before it answers
            self.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFoundError(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._name(key))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def size(self, key: str) -> int:
        from minio.error import S3Error

        try:
            size = self.client.stat_object(self.bucket, self._name(key)).size
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                raise ObjectNotFoundError(key) from None
            raise
        if size is None:
            raise ObjectNotFoundError(key)  # a listing entry without a size is not an object
        return size

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, self._name(key))

    def list(self, prefix: str = "") -> list[str]:
        if prefix:  # a prefix may end in "/"; validate it as the key it starts
            validate_key(prefix.rstrip("/") or "x")
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(o.object_name[strip:] for o in self.client.list_objects(self.bucket, prefix=full, recursive=True))

    def url(self, key: str, expires: timedelta = timedelta(minutes=15)) -> str | None:
        return self.client.presigned_get_object(self.bucket, self._name(key), expires=expires)


def open_store(url: str, *, endpoint: str = "", access_key: str = "", secret_key: str = "",
               secure: bool = False, region: str = "us-east-1") -> ObjectStore:
    """`file:///path` or `s3://bucket[/prefix]`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, endpoint, access_key, secret_key, secure, region, prefix=parsed.path)
    raise ValueError(f"unsupported object store URL {url!r}: use file:// or s3://")


def store_from_settings(settings) -> ObjectStore:
    return open_store(
        settings.resolved_object_store_url,
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
