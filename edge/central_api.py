"""The agent's calls to the central API, over one httpx client: submit a batch, fetch a model artifact
(with its ETag, so an unchanged alias costs a 304), read a batch's predictions.

Every answer the API gives, whatever its status, counts as contact (`last_contact`): the link is up
even when the API says 429 or 503.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from edge.queue import PendingBatch


@dataclass(frozen=True)
class Artifact:
    """A model file as the API served it: its bytes, the version it belongs to, and the sha256 the API
    names for it (the registry's record for the manifest, the manifest's for the other files)."""

    version: str
    sha256: str
    data: bytes


class CentralApi:
    def __init__(self, api_url: str, api_key: str, timeout_s: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No connection pool reuse across an outage is assumed: httpx drops a broken connection and
        # opens another on the next request.
        self.http = httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                      follow_redirects=False)
        self.last_contact: float | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        self.last_contact = time.time()
        return response

    async def submit(self, batch: PendingBatch, site_id: str, files: list[tuple[str, bytes, str]]) -> httpx.Response:
        """POST /v1/batches, multipart: the batch's frames under its idempotency key."""
        return await self._request(
            "POST", "/v1/batches",
            data={"camera_id": batch.camera_id, "site_id": site_id, "idempotency_key": batch.idempotency_key},
            files=[("frames", f) for f in files])

    async def artifact(self, ref: str, name: str, etag: str | None = None) -> Artifact | None:
        """A model file of `ref` (a version, or an alias resolved by the API); None when the ETag given
        is still current (304). HTTPStatusError for any other refusal."""
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        response = await self._request("GET", f"/v1/models/{ref}/artifacts/{name}", headers=headers)
        if response.status_code == 304:
            return None
        response.raise_for_status()
        return Artifact(response.headers.get("x-sightline-model-version", ""),
                        response.headers.get("etag", "").strip('"'), response.content)

    async def privacy(self, site_id: str, camera_id: str) -> dict[str, Any] | None:
        """The privacy settings revision in force for the camera (its own, else its site's default), or
        None when it has none. HTTPStatusError when the API refuses (a key out of scope)."""
        response = await self._request("GET", f"/v1/sites/{site_id}/cameras/{camera_id}/privacy")
        response.raise_for_status()
        in_force: dict[str, Any] | None = response.json()["in_force"]
        return in_force

    async def predictions(self, batch_id: str) -> dict[str, Any] | None:
        """A batch's frames with their latest predictions (one page: a batch is at most 256 frames);
        None when the API does not know the batch."""
        response = await self._request("GET", f"/v1/batches/{batch_id}/predictions", params={"limit": 500})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
