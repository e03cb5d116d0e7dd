"""The inference worker: classification activities, which call the Ray Serve application over HTTP."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from activities.inference import InferenceActivities
from infra.settings import Settings
from serving.client import ServingClient


def inference_worker(client: Client, serving: ServingClient, settings: Settings) -> Worker:
    activities = InferenceActivities(serving)
    return Worker(
        client,
        task_queue=settings.inference_task_queue,
        activities=[activities.classify_frames],
        # Each activity is a chunk of frames; serving batches across them, so a few in flight suffice.
        max_concurrent_activities=settings.worker_max_concurrent_activities,
    )
