"""Local and central predictions side by side: for every uploaded frame the agent decided, the API's
prediction is fetched once its batch is classified and recorded next to the local one, so a model
mismatch after a rollout (the edge on one version, the stack on another, or the two disagreeing on
the same version) shows in `sightline edge status` and in the metrics.

One GET per batch (GET /v1/batches/{id}/predictions) as its frames are classified, asked again less
often the longer a batch takes; frames of a batch that never completes are given up on after
`reconcile_give_up_s`.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import structlog

from edge.central_api import CentralApi
from edge.metrics import EdgeMetrics
from edge.pacing import pause
from edge.queue import CentralResult, FrameQueue
from edge.settings import EdgeSettings

log = structlog.get_logger(__name__)
# A batch is asked about this long after its upload at the earliest: it takes its workflow that long.
SETTLE_S = 1.0
ASK_AT_MOST = 20  # batches asked about per round


class Reconciler:
    def __init__(self, queue: FrameQueue, api: CentralApi, settings: EdgeSettings, metrics: EdgeMetrics) -> None:
        self.queue, self.api, self.settings, self.metrics = queue, api, settings, metrics
        self.last_error: str | None = None
        self._next_ask: dict[str, float] = {}
        self._wait: dict[str, float] = {}

    async def step(self) -> int:
        """Fetch the central predictions of the batches waiting for them; how many frames were compared."""
        now = time.time()
        await asyncio.to_thread(self.queue.give_up_central, now - self.settings.reconcile_give_up_s)
        await asyncio.to_thread(self.queue.prune_sent, now - self.settings.sent_retention_s)
        compared = 0
        waiting = await asyncio.to_thread(self.queue.awaiting_central, now - SETTLE_S, ASK_AT_MOST * 5)
        for batch_id in [b for b in waiting if self._next_ask.get(b, 0.0) <= now][:ASK_AT_MOST]:
            page = await self.api.predictions(batch_id)
            # Asked again later, less often the longer it takes, so a batch that never completes
            # does not crowd out the ones behind it.
            wait = self._wait.get(batch_id, self.settings.reconcile_interval_s) * 2
            self._wait[batch_id], self._next_ask[batch_id] = min(wait, 300.0), now + min(wait, 300.0)
            if page is None:
                continue  # unknown to the API (deleted): given up on in time
            results = []
            for item in page.get("items", []):
                if item.get("status") == "rejected":
                    results.append(CentralResult(item["position"], "rejected"))
                elif item.get("prediction"):
                    p = item["prediction"]
                    results.append(CentralResult(item["position"], "classified", p["label"], p.get("confidence"),
                                                 p.get("model_version")))
            if not results:
                continue
            done, disagreed = await asyncio.to_thread(self.queue.record_central, batch_id, results)
            if len(results) == len(page.get("items", [])):  # every frame answered: nothing more to ask
                self._next_ask.pop(batch_id, None)
                self._wait.pop(batch_id, None)
            self.metrics.reconciled.inc(done)
            self.metrics.disagreements.inc(disagreed)
            compared += done
        return compared

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
                self.last_error = None
            except httpx.HTTPError as exc:
                self.last_error = f"reading central predictions failed: {exc!r}"
            except Exception as exc:  # an answer of another shape: logged, and the next round tries again
                log.exception("reconciling predictions failed")
                self.last_error = f"reading central predictions failed: {exc!r}"
            await pause(stop, self.settings.reconcile_interval_s)
