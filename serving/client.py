"""Async client of the inference service, used by the inference activities.

It sends object keys (never frame bytes) and raises `ServingError` with `retryable` set the way a
caller should act on it: the service unreachable, timing out, overloaded (503) or failing (5xx) is
worth retrying; a request the service refuses as bad input (4xx) will be refused again.
"""

from __future__ import annotations

from typing import Any, Self

import httpx

from serving.schema import ClassifyRequest, ClassifyResponse, FrameKey


class ServingError(RuntimeError):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code


class ServingClient:
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

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise ServingError(f"inference service unreachable at {self.base_url}: {type(exc).__name__}: {exc}",
                               retryable=True) from exc
        if response.status_code >= 400:
            code, detail = "", response.text[:500]
            try:
                body = response.json()
                code = body.get("error", "") if isinstance(body, dict) else ""
                detail = str(body.get("detail", detail)) if isinstance(body, dict) else detail
            except ValueError:
                pass
            # 408 and 429 are the client's fault only in timing: retry them like 5xx.
            retryable = response.status_code >= 500 or response.status_code in (408, 429)
            raise ServingError(f"inference service answered {response.status_code} {code}: {detail}",
                               retryable=retryable, status=response.status_code, code=code)
        return response

    async def classify(self, frames: list[tuple[str, str]], model: str = "production") -> ClassifyResponse:
        """frames: (frame_id, object_key) pairs; model: an alias or a version name."""
        body = ClassifyRequest(frames=[FrameKey(frame_id=f, object_key=k) for f, k in frames], model=model)
        response = await self._request("POST", "/v1/classify", json=body.model_dump())
        return ClassifyResponse.model_validate(response.json())

    async def models(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/v1/models")).json()

    async def healthy(self) -> bool:
        try:
            await self._request("GET", "/healthz")
            return True
        except ServingError:
            return False
