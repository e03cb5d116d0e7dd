"""Privacy settings (per site default and per camera) and the redaction of frames as they are accepted.

Settings change rarely and are read on every accept, so the accept path reads them through a short
process-wide cache (CACHE_TTL_S): one dict lookup per batch or camera frame, no query, and no decode at
all for a camera without settings (its frames are stored byte for byte, as before). A change through
this process drops its site's entries at once; another API process sees it within CACHE_TTL_S.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from api.audit import record_audit
from api.submission import Upload
from infra.db import DbConnection, DbPool, Row
from infra.tables import privacy_revisions
from infra.tables.api_keys import Principal
from vision.decode import FrameRejected
from vision.redaction import Redacted, RedactionSettings, redact

# How long a camera's settings are trusted without asking Postgres again (per API process).
CACHE_TTL_S = 5.0
_cache: dict[tuple[str, str], tuple[float, RedactionSettings | None]] = {}


class RedactionRefused(ValueError):
    """A frame of a camera with redaction on that cannot be redacted (not decodable, or sent through a
    path that stores raw bytes first): nothing of it is stored; the message says which frame and why."""


def settings_of(row: Row | None) -> RedactionSettings | None:
    """The redaction a revision row asks for; None when there is none or it changes nothing."""
    if row is None:
        return None
    settings = RedactionSettings.from_json(row["revision"], row["faces"], row["regions"])
    return settings if settings.active else None


def forget(site_id: str) -> None:
    """Drop the cached settings of a site's cameras (its default or one camera changed)."""
    for key in [k for k in _cache if k[0] == site_id]:
        _cache.pop(key, None)


async def in_force(pool: DbPool, site_id: str, camera_id: str) -> RedactionSettings | None:
    """The redaction that applies to the camera now, through the cache; None: store as received."""
    now = time.monotonic()
    cached = _cache.get((site_id, camera_id))
    if cached is not None and cached[0] > now:
        return cached[1]
    async with pool.connection() as conn:
        settings = settings_of(await privacy_revisions.in_force(conn, site_id, camera_id))
    _cache[(site_id, camera_id)] = (now + CACHE_TTL_S, settings)
    return settings


async def of_revision(conn: DbConnection, revision: int) -> RedactionSettings | None:
    return settings_of(await privacy_revisions.get(conn, revision))


def _redact_all(uploads: Sequence[Upload], settings: RedactionSettings, max_pixels: int) -> list[Redacted]:
    done = []
    for position, upload in enumerate(uploads):
        try:
            done.append(redact(upload.data, settings, max_pixels))
        except FrameRejected as exc:
            name = upload.filename or "unnamed"
            raise RedactionRefused(f"frame {position} ({name}): this camera's frames are redacted before they are "
                                   f"stored (privacy settings revision {settings.revision}) and this one could "
                                   f"not be decoded to redact it: {exc}; nothing of the batch was stored") from None
    return done


async def redact_uploads(uploads: Sequence[Upload], settings: RedactionSettings, max_pixels: int) -> dict[str, Any]:
    """Redact the uploads in place (their bytes become the redacted JPEGs, their keys the redacted
    ones; their sha256 stays that of the bytes received), in one thread for the batch; what ran."""
    results = await asyncio.to_thread(_redact_all, uploads, settings, max_pixels)
    for upload, result in zip(uploads, results, strict=True):
        upload.redacted(result)
    return {"revision": settings.revision, "faces": sum(len(r.faces) for r in results),
            "regions": len(settings.regions), "frames": len(results)}


class PrivacySettingsService:
    def __init__(self, pool: DbPool) -> None:
        self.pool = pool

    async def read(self, site_id: str, camera_id: str | None) -> tuple[Row | None, Row | None]:
        """(the site's or camera's own latest revision, the revision in force for it)."""
        async with self.pool.connection() as conn:
            own = await privacy_revisions.latest(conn, site_id, camera_id or privacy_revisions.SITE_DEFAULT)
            effective = (await privacy_revisions.in_force(conn, site_id, camera_id) if camera_id else own)
        return own, effective

    async def put(self, site_id: str, camera_id: str | None, faces: bool, regions: list[dict[str, Any]],
                  reason: str, caller: Principal) -> tuple[Row, bool]:
        """A new revision (or the current one, when it says this already), audited either way."""
        resource = f"sites/{site_id}/cameras/{camera_id}/privacy" if camera_id else f"sites/{site_id}/privacy"
        async with self.pool.connection() as conn, conn.transaction():
            row, created = await privacy_revisions.append(
                conn, site_id=site_id, camera_id=camera_id or privacy_revisions.SITE_DEFAULT, faces=faces,
                regions=regions, changed_by=f"{caller.name} ({caller.key_id})", reason=reason)
            await record_audit(conn, caller, "privacy.put", resource,
                               details={"revision": row["revision"], "created": created, "faces": faces,
                                        "regions": len(regions), "reason": reason})
        forget(site_id)
        return row, created
