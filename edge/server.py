"""The agent's loopback HTTP endpoint, a plain ASGI app under uvicorn (the edge carries no web framework):

- `POST /frames?camera_id=C&filename=F`, the image as the body: queued durably, decided locally, and
  answered with the local prediction and novelty flag (200), or refused with the reason: 413 (too large),
  415 (not a JPEG, PNG or WebP), 422 (a bad camera id, a camera that must be redacted), 507 (the queue's
  disk bound, with Retry-After). The body is bounded before it is read.
- `GET /status`: the agent's status as JSON (edge.status.EdgeStatus).
- `GET /metrics`: Prometheus text.
- `GET /healthz`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from edge.capture import Captured, CaptureRefused

if TYPE_CHECKING:
    from edge.agent import EdgeAgent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# While the queue is full, a camera may try again this much later (the backlog drains meanwhile).
FULL_RETRY_AFTER_S = 5


class BodyTooLarge(Exception):
    pass


def _answer(captured: Captured) -> dict[str, Any]:
    d = captured.decision
    prediction = None if d is None else {
        "label": d.label, "confidence": d.confidence, "probabilities": d.probabilities, "novelty": d.novelty,
        "unfamiliar": d.unfamiliar, "model_version": captured.model_version}
    return {"seq": captured.seq, "camera_id": captured.camera_id, "filename": captured.filename,
            "sha256": captured.sha256, "size_bytes": captured.size_bytes, "queued": True, "prediction": prediction,
            "rejected": captured.rejected, "elapsed_ms": round(captured.elapsed_s * 1000, 2)}


class EdgeHttp:
    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/frames" and method == "POST":
            await self._frames(scope, receive, send)
        elif path == "/status" and method == "GET":
            await _send(send, 200, json.dumps(self.agent.status().to_dict()).encode(), "application/json")
        elif path == "/metrics" and method == "GET":
            await _send(send, 200, self.agent.render_metrics(), "text/plain; version=0.0.4")
        elif path == "/healthz" and method == "GET":
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(send, 404, {"detail": f"no route {method} {path}"})

    async def _frames(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        limit = self.agent.settings.max_frame_bytes
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            await _json(send, 400, {"detail": "Content-Length is not a number"})
            return
        if declared > limit:
            await _json(send, 413, {"detail": f"the frame has {declared} bytes; at most {limit}"})
            return
        try:
            body = await _read_body(receive, limit)
        except BodyTooLarge:
            await _json(send, 413, {"detail": f"the frame has more than {limit} bytes"})
            return
        try:
            captured = await self.agent.capture.take(body, camera_id=query.get("camera_id"),
                                                     filename=query.get("filename", ""), source="http")
        except CaptureRefused as refused:
            extra = [(b"retry-after", str(FULL_RETRY_AFTER_S).encode())] if refused.status == 507 else []
            await _json(send, refused.status, {"detail": str(refused), "reason": refused.reason}, extra)
            return
        await _json(send, 200, _answer(captured))
        self.agent.metrics.decision_seconds.observe(time.perf_counter() - started)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _json(send: Send, status: int, body: dict[str, Any],
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, json.dumps(body).encode(), "application/json", headers)


async def _send(send: Send, status: int, body: bytes, content_type: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
