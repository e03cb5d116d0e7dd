"""The inference worker: the classification activity, which calls the Ray Serve application and
records what it answers."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from activities.inference import Classifier, InferenceActivities
from activities.legacy_batch import LegacyBatchActivities
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore
from serving.client import ServingClient


def inference_worker(client: Client, classifier: Classifier, pool: DbPool, store: ObjectStore,
                     settings: Settings, legacy_serving: ServingClient | None = None) -> Worker:
    activities = InferenceActivities(classifier, pool)
    legacy = LegacyBatchActivities(pool, store, legacy_serving)
    return Worker(
        client,
        task_queue=settings.inference_task_queue,
        # For batches started before the durable path, until none is open.
        activities=[activities.classify_batch, *([legacy.classify_frames] if legacy_serving else [])],
        # Each activity is a chunk of frames; serving batches across them, so a few in flight suffice.
        max_concurrent_activities=settings.worker_max_concurrent_activities,
    )
