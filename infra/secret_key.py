"""The key that signs image URLs and the sign-in form's CSRF cookie: SIGHTLINE_SECRET_KEY, or, on the
local stack only, one generated once and kept in the data dir, so every process of a local stack (and a
restarted API) agrees on it. Outside the local stack a generated key would differ per host and live in
a data volume, so the API refuses to start without a configured one (`require_configured_secret`)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile

from infra.settings import Settings

MIN_SECRET_LENGTH = 32


class SecretKeyMissing(RuntimeError):
    """Outside the local stack, SIGHTLINE_SECRET_KEY must be set (and long enough)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def outside_local_stack(settings: Settings) -> bool:
    """Production, or an API that listens on more than this machine's loopback interface."""
    return settings.deployment == "production" or not _loopback(settings.api_host)


def require_configured_secret(settings: Settings) -> None:
    """SecretKeyMissing, saying what to do, when this process runs outside the local stack without a
    configured secret key of at least MIN_SECRET_LENGTH characters."""
    if not outside_local_stack(settings):
        return
    if len(settings.secret_key) < MIN_SECRET_LENGTH:
        where = "deployment is production" if settings.deployment == "production" else (
            f"the API listens on {settings.api_host}")
        raise SecretKeyMissing(
            f"refusing to start: {where} and SIGHTLINE_SECRET_KEY is "
            f"{'too short' if settings.secret_key else 'not set'}; set it to at least {MIN_SECRET_LENGTH} random"
            " characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) in the env file")


def secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    require_configured_secret(settings)  # a generated key is for the local stack only
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
