"""Dependencies declared once with Annotated; routes take what they need by type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from infra.settings import Settings
from infra.store import ObjectStore


def _pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


def _temporal(request: Request) -> Client:
    return request.app.state.temporal


def _store(request: Request) -> ObjectStore:
    return request.app.state.store


def _settings(request: Request) -> Settings:
    return request.app.state.settings


DbDep = Annotated[AsyncConnectionPool, Depends(_pool)]
TemporalDep = Annotated[Client, Depends(_temporal)]
StoreDep = Annotated[ObjectStore, Depends(_store)]
SettingsDep = Annotated[Settings, Depends(_settings)]
