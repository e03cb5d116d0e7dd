"""Dependencies declared once with Annotated; routes take what they need by type. Clients are made
once in the app's lifespan (api.main); services are cheap objects built per request around them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from api.services.batches import BatchService
from api.services.camera_health import CameraHealthService
from api.services.cameras import CameraStats, CameraStreams
from api.services.drift import DriftService
from api.services.frames import FrameService
from api.services.models import ModelCatalog
from api.services.privacy import PrivacySettingsService
from api.services.retraining import RetrainingService
from api.services.review_queue import ReviewQueue
from api.services.rollouts import RolloutService
from api.services.uploads import Uploads
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore
from vision.registry import ModelRegistry


def _pool(request: Request) -> DbPool:
    pool: DbPool = request.app.state.pool
    return pool


def _temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


def _store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbDep = Annotated[DbPool, Depends(_pool)]
TemporalDep = Annotated[Client, Depends(_temporal)]
StoreDep = Annotated[ObjectStore, Depends(_store)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _batches(pool: DbDep, store: StoreDep, temporal: TemporalDep, settings: SettingsDep) -> BatchService:
    return BatchService(pool, store, temporal, settings, _model_catalog(pool))


def _cameras(pool: DbDep, store: StoreDep, temporal: TemporalDep, settings: SettingsDep) -> CameraStreams:
    return CameraStreams(pool, store, temporal, settings)


def _camera_stats(pool: DbDep, settings: SettingsDep) -> CameraStats:
    return CameraStats(pool, settings)


def _camera_health(pool: DbDep, settings: SettingsDep) -> CameraHealthService:
    return CameraHealthService(pool, settings)


def _frames(pool: DbDep, store: StoreDep, settings: SettingsDep) -> FrameService:
    return FrameService(pool, store, settings)


def _review_queue(pool: DbDep, temporal: TemporalDep, settings: SettingsDep) -> ReviewQueue:
    return ReviewQueue(pool, temporal, settings)


def _uploads(store: StoreDep, settings: SettingsDep) -> Uploads:
    return Uploads(store, settings)


BatchServiceDep = Annotated[BatchService, Depends(_batches)]
UploadsDep = Annotated[Uploads, Depends(_uploads)]
CameraStreamsDep = Annotated[CameraStreams, Depends(_cameras)]
CameraStatsDep = Annotated[CameraStats, Depends(_camera_stats)]
CameraHealthDep = Annotated[CameraHealthService, Depends(_camera_health)]
FrameServiceDep = Annotated[FrameService, Depends(_frames)]
ReviewQueueDep = Annotated[ReviewQueue, Depends(_review_queue)]


def _drift(pool: DbDep, store: StoreDep, temporal: TemporalDep, settings: SettingsDep) -> DriftService:
    return DriftService(pool, store, temporal, settings)


def _retraining(pool: DbDep, store: StoreDep, temporal: TemporalDep, settings: SettingsDep) -> RetrainingService:
    return RetrainingService(pool, store, temporal, settings)


def _model_catalog(pool: DbDep) -> ModelCatalog:
    # The registry is synchronous psycopg on the same database as the pool (infra.db.open_pool takes a URL).
    url = pool.conninfo
    assert isinstance(url, str)
    return ModelCatalog(ModelRegistry(url))


def _rollouts(pool: DbDep, temporal: TemporalDep, settings: SettingsDep) -> RolloutService:
    url = pool.conninfo
    assert isinstance(url, str)
    return RolloutService(pool, temporal, settings, ModelRegistry(url))


DriftServiceDep = Annotated[DriftService, Depends(_drift)]
RetrainingServiceDep = Annotated[RetrainingService, Depends(_retraining)]
ModelCatalogDep = Annotated[ModelCatalog, Depends(_model_catalog)]
RolloutServiceDep = Annotated[RolloutService, Depends(_rollouts)]


def _privacy(pool: DbDep) -> PrivacySettingsService:
    return PrivacySettingsService(pool)


PrivacyServiceDep = Annotated[PrivacySettingsService, Depends(_privacy)]
