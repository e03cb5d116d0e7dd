"""The drift worker: Evidently's checks on the `drift` task queue. In the local stack it runs in the
worker process beside the other queues; in production it runs on its own, scaled apart from the
workers that move batches and reviews along (a check costs seconds of CPU)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from activities.drift import DriftActivities
from infra.db import DbPool
from infra.settings import Settings
from infra.stack_urls import database_url
from infra.store import ObjectStore
from vision.registry import ModelRegistry
from workers.versioning import deployment_config


def drift_worker(client: Client, pool: DbPool, store: ObjectStore, settings: Settings,
                 registry: ModelRegistry | None = None) -> Worker:
    drift = DriftActivities(pool, store, settings, registry or ModelRegistry(database_url(settings)))
    return Worker(client, task_queue=settings.drift_task_queue, activities=[drift.run_drift_check],
                  # A check holds a core for seconds: a few at a time is plenty.
                  max_concurrent_activities=2, deployment_config=deployment_config(settings))
