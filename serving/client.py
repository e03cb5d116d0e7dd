"""Clients of the inference service, used by the inference activities: over HTTP through Serve's proxy
(any caller, anywhere), or through the application's handle (a worker that is a Ray driver on the
serving cluster: no proxy hop, no JSON).

Both send object keys (never frame bytes) and raise `ServingError` with `retryable` set the way a
caller should act on it: the service unreachable, timing out, overloaded (503) or failing (5xx) is
worth retrying; a request the service refuses as bad input (4xx) will be refused again.
"""

from __future__ import annotations

from typing import Any, Self

import httpx
from opentelemetry.trace import SpanKind

from infra.telemetry import trace_headers, tracer
from serving.schema import ClassifyRequest, ClassifyResponse, FrameKey

APP_NAME = "sightline"  # the Serve application's name (serving.app deploys it under this name)
# The call into serving is a client span of the caller's trace; its context travels in a `traceparent`
# header (HTTP) or beside the request (the handle), and the preprocessor's spans are its children.
_tracer = tracer(__name__)


class ServingError(RuntimeError):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code


def _request(frames: list[tuple[str, str]], model: str) -> ClassifyRequest:
    return ClassifyRequest(frames=[FrameKey(frame_id=f, object_key=k) for f, k in frames], model=model)


def parse_reply(status: int, body: Any, text: str = "") -> ClassifyResponse:
    """The service's answer, or the ServingError it means."""
    if status < 400:
        return ClassifyResponse.model_validate(body)
    code, detail = "", text[:500]
    if isinstance(body, dict):
        code, detail = str(body.get("error", "")), str(body.get("detail", detail))
    # Retry 5xx, 408 and 429 (the client's fault only in timing), and any 4xx the application did not
    # answer itself (no JSON body): while serving restarts, Serve's proxy is up before the application
    # and answers 404 "Path '/v1/classify' not found". Only the application's own refusals (a model
    # that does not exist, an invalid request) are final.
    ours = isinstance(body, dict) and ("error" in body or "detail" in body)
    retryable = status >= 500 or status in (408, 429) or not ours
    raise ServingError(f"inference service answered {status} {code}: {detail}", retryable=retryable, status=status,
                       code=code)


class ServingClient:
    """Over HTTP, through Serve's proxy."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0),
                                       limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise ServingError(f"inference service unreachable at {self.base_url}: {type(exc).__name__}: {exc}",
                               retryable=True) from exc

    async def classify(self, frames: list[tuple[str, str]], model: str = "production") -> ClassifyResponse:
        """frames: (frame_id, object_key) pairs; model: an alias or a version name."""
        with _tracer.start_as_current_span("serving.classify", kind=SpanKind.CLIENT,
                                           attributes={"sightline.frames": len(frames), "sightline.model": model}):
            response = await self._send("POST", "/v1/classify", json=_request(frames, model).model_dump(),
                                        headers=trace_headers())
        try:
            body = response.json()
        except ValueError:
            body = None
        return parse_reply(response.status_code, body, response.text)

    async def models(self) -> list[dict[str, Any]]:
        response = await self._send("GET", "/v1/models")
        if response.status_code >= 400:
            parse_reply(response.status_code, None, response.text)
        models: list[dict[str, Any]] = response.json()
        return models

    async def healthy(self) -> bool:
        try:
            return (await self._send("GET", "/healthz")).status_code == 200
        except ServingError:
            return False


class ServingHandleClient:
    """Through the Serve application's handle: for a process connected to the Ray cluster that runs
    the application (`ray.init(address=...)` first). Ray pickles the request and the reply; there is
    no HTTP proxy in the way and no JSON to write or parse."""

    def __init__(self, app_name: str = APP_NAME) -> None:
        from ray import serve  # only processes that use the handle pay for importing Ray

        self._handle = serve.get_app_handle(app_name)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def classify(self, frames: list[tuple[str, str]], model: str = "production") -> ClassifyResponse:
        with _tracer.start_as_current_span("serving.classify", kind=SpanKind.CLIENT,
                                           attributes={"sightline.frames": len(frames), "sightline.model": model}):
            try:
                status, body = await self._handle.classify_keys.remote(_request(frames, model), trace_headers())
            except Exception as exc:  # replica died, application redeploying, cluster gone: all transient
                raise ServingError(f"inference service unreachable through its handle: {type(exc).__name__}: "
                                   f"{exc}", retryable=True) from exc
        return parse_reply(status, body)
