"""Whether a metrics port can be had. A worker or a serving head whose metrics port another process holds
(a second worker on the same host, a test's stack beside another) keeps serving its task queues or
models and says so in its log: the metrics of one process are not worth its work."""

from __future__ import annotations

import socket


def bindable(host: str, port: int) -> bool:
    """True when nothing listens on (host, port) now; SO_REUSEADDR as the HTTP servers set it, so a
    port whose last owner just died is free."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
