"""Dependencies declared once with Annotated; routes take what they need by type. Clients are made
once in the app's lifespan (api.main); services are cheap objects built per request around them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from api.services.batches import BatchService
from api.services.cameras import CameraStreams
from api.services.frames import FrameService
from api.services.review_queue import ReviewQueue
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore


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
    return BatchService(pool, store, temporal, settings)


def _cameras(pool: DbDep, store: StoreDep, temporal: TemporalDep, settings: SettingsDep) -> CameraStreams:
    return CameraStreams(pool, store, temporal, settings)


def _frames(pool: DbDep, store: StoreDep, settings: SettingsDep) -> FrameService:
    return FrameService(pool, store, settings)


def _review_queue(pool: DbDep, temporal: TemporalDep) -> ReviewQueue:
    return ReviewQueue(pool, temporal)


BatchServiceDep = Annotated[BatchService, Depends(_batches)]
CameraStreamsDep = Annotated[CameraStreams, Depends(_cameras)]
FrameServiceDep = Annotated[FrameService, Depends(_frames)]
ReviewQueueDep = Annotated[ReviewQueue, Depends(_review_queue)]
