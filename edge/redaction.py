"""Redaction at the edge: where a camera's privacy settings ask for it, a frame is redacted before it is
queued, so its raw bytes never reach the disk of the edge box, the API, the store or Postgres.

The redaction code itself is the API's, when the privacy issue lands (one implementation for the two
places a frame enters Sightline); this is the hook it plugs into. Until then a camera that must be
redacted (settings.redact_cameras) has its frames refused at capture, with a reason, rather than sent
as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# A redactor takes the frame's bytes and its camera and answers the redacted bytes (same format).
Redactor = Callable[[bytes, str], bytes]


class RedactionUnavailable(Exception):
    """The camera must be redacted and no redactor is installed: the frame is not taken."""


class Redaction:
    def __init__(self, cameras: Iterable[str], redactor: Redactor | None = None) -> None:
        self.cameras = frozenset(cameras)
        self.redactor = redactor

    def apply(self, data: bytes, camera_id: str) -> bytes:
        if camera_id not in self.cameras:
            return data
        if self.redactor is None:
            raise RedactionUnavailable(f"camera {camera_id!r} must be redacted before its frames leave it, and this "
                                       "agent has no redactor: the frame was not taken")
        return self.redactor(data, camera_id)
