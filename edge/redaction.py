"""Redaction at the edge: where a camera's privacy settings ask for it, a frame is redacted before it is
queued, so its raw bytes never reach the disk of the edge box, the API, the store or Postgres.

The settings are the central ones (GET /v1/sites/{site}/cameras/{camera}/privacy: the camera's own
revision, else its site's default) and the redaction is the API's own, vision.redaction: one
implementation for the two places a frame enters Sightline. Each camera's settings are asked for at its
first frame and again every `refresh_s`, in the background once known (a frame waits for the API only
the first time, and at most `fetch_timeout_s`); the last settings the API gave are kept in the queue's
database, so an agent restarted while the API is away still redacts.

When the settings are not known (the API never answered for that camera): a camera listed in
`redact_cameras` (settings.redact_cameras: "never let this one out raw") has its frames refused with a
reason; another camera's frames are queued as they are, and the API redacts them on arrival if its
settings say so (the API redacts every frame of a camera with redaction on, whoever sent it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from vision.decode import DEFAULT_MAX_PIXELS, FrameRejected
from vision.redaction import RedactionSettings, redact

log = structlog.get_logger(__name__)

# A redactor takes the frame's bytes and its camera and answers the redacted bytes (a stand-in in tests).
Redactor = Callable[[bytes, str], bytes]
# The central settings in force for a camera (the `in_force` of the API's answer, None when there are
# none); raises when the API could not say.
SettingsSource = Callable[[str], Awaitable[dict[str, Any] | None]]
# The queue's meta table: where the last settings the API gave are kept across restarts.
MetaGet = Callable[[str], str | None]
MetaSet = Callable[[dict[str, str]], None]


class RedactionUnavailable(Exception):
    """The camera must be redacted and this agent cannot (no settings known, or the frame cannot be
    decoded to redact it): the frame is not taken."""


def _settings(in_force: dict[str, Any] | None) -> RedactionSettings | None:
    if in_force is None:
        return None
    settings = RedactionSettings.from_json(int(in_force["revision"]), in_force["faces"], in_force["regions"])
    return settings if settings.active else None


class Redaction:
    def __init__(self, cameras: Iterable[str], redactor: Redactor | None = None, *,
                 central: SettingsSource | None = None, meta: tuple[MetaGet, MetaSet] | None = None,
                 refresh_s: float = 30.0, fetch_timeout_s: float = 2.0,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.cameras = frozenset(cameras)
        self.redactor = redactor
        self.central, self.meta = central, meta
        self.refresh_s, self.fetch_timeout_s, self.max_pixels = refresh_s, fetch_timeout_s, max_pixels
        # camera -> (the settings in force, None for none; when the API last said so)
        self._known: dict[str, tuple[RedactionSettings | None, float]] = {}
        self._asked: dict[str, float] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def settings_for(self, camera_id: str) -> RedactionSettings | None:
        known = self._known.get(camera_id)
        return known[0] if known else None

    def redacts(self, camera_id: str) -> bool:
        """Whether `apply` will decode this camera's frames (worth a thread of their own)."""
        return self.settings_for(camera_id) is not None

    def apply(self, data: bytes, camera_id: str) -> bytes:
        """The bytes to queue: redacted under the camera's central settings, or as they are."""
        settings = self.settings_for(camera_id)
        if settings is not None:
            try:
                return redact(data, settings, self.max_pixels).data
            except FrameRejected as exc:
                raise RedactionUnavailable(f"camera {camera_id!r} is redacted before its frames leave it (revision "
                                           f"{settings.revision}) and this frame could not be decoded: {exc}; it "
                                           "was not taken") from None
        if camera_id not in self.cameras:
            return data
        if self.redactor is not None:
            return self.redactor(data, camera_id)
        if camera_id in self._known:
            raise RedactionUnavailable(f"camera {camera_id!r} must be redacted before its frames leave it, and its "
                                       "central privacy settings redact nothing: the frame was not taken")
        raise RedactionUnavailable(f"camera {camera_id!r} must be redacted before its frames leave it, and this "
                                   "agent has no redactor and no privacy settings from the API for it: the frame "
                                   "was not taken")

    async def refresh(self, camera_id: str) -> None:
        """Make the camera's settings current enough: the first time (from the queue's database, else the
        API) before its frame is taken, later in the background every refresh_s."""
        if self.central is None:
            return
        now = time.monotonic()
        if camera_id not in self._known:
            stored = self.meta[0](f"privacy:{camera_id}") if self.meta else None
            if stored is not None:
                self._known[camera_id] = (_settings(json.loads(stored)), 0.0)
        known = self._known.get(camera_id)
        if known is not None and now - known[1] < self.refresh_s:
            return
        if now - self._asked.get(camera_id, -self.refresh_s) < self.refresh_s:
            return  # the API did not answer lately: not asked again on every frame
        if known is None:  # nothing to go on: this frame waits for the answer (a short one)
            await self._fetch(camera_id)
        elif camera_id not in self._refreshing:
            task = asyncio.create_task(self._fetch(camera_id))
            self._refreshing[camera_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(camera_id, None))

    async def _fetch(self, camera_id: str) -> None:
        assert self.central is not None
        self._asked[camera_id] = time.monotonic()
        try:
            in_force = await asyncio.wait_for(self.central(camera_id), self.fetch_timeout_s)
            settings = _settings(in_force)
        except Exception as exc:  # the API away or refusing: the last known settings stay in force
            log.warning("privacy settings not fetched", camera_id=camera_id, error=repr(exc)[:300])
            return
        self._known[camera_id] = (settings, time.monotonic())
        if self.meta:
            self.meta[1]({f"privacy:{camera_id}": json.dumps(in_force)})
