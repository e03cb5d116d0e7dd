"""The inference worker: the classification activity, which calls the Ray Serve application and
records what it answers."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from activities.camera_health import CameraHealthMonitor
from activities.inference import Classifier, InferenceActivities
from infra.db import DbPool
from infra.settings import Settings
from workers.versioning import deployment_config


def inference_worker(client: Client, classifier: Classifier, pool: DbPool, settings: Settings) -> Worker:
    health = CameraHealthMonitor(client, settings) if settings.camera_health_enabled else None
    activities = InferenceActivities(classifier, pool, client, health)
    return Worker(
        client,
        task_queue=settings.inference_task_queue,
        activities=[activities.classify_batch],
        deployment_config=deployment_config(settings),
        # Each activity is a chunk of frames; serving batches across them, so a few in flight suffice.
        max_concurrent_activities=settings.worker_max_concurrent_activities,
    )
