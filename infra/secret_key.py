"""The key that signs image URLs and cookie sessions: SIGHTLINE_SECRET_KEY, or one generated once and
kept in the data dir, so every process of a local stack (and a restarted API) agrees on it."""

from __future__ import annotations

import os
import secrets
import tempfile

from infra.settings import Settings


def secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.resolved_data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)  # atomic and exclusive: of two racing processes, one key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()
