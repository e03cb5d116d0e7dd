"""The FastAPI application factory. Clients (Postgres pool, Temporal, object store) are created once
in the lifespan and reached by routes through the dependencies in api.deps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from temporalio.client import Client

from api import metrics
from api.errors import register_error_handlers
from api.request_ids import RequestIdMiddleware
from api.routes import (
    batches,
    cameras,
    datasets,
    deletions,
    drift,
    frames,
    health,
    models,
    privacy,
    retraining,
    review_page,
    reviews,
    rollouts,
    uploads,
)
from api.routes.prometheus import router as prometheus_router
from api.submission import FORM_LIMITS
from infra.db import open_pool
from infra.log import configure_logging
from infra.schema_migrations import require_migrated
from infra.secret_key import require_configured_secret, secret_key
from infra.settings import Settings, get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.telemetry import configure_tracing, tracing_configured, tracing_options
from infra.temporal import connect, ensure_search_attributes
from workflows import search_attributes as sa


def create_app(settings: Settings | None = None, *, temporal_client: Client | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Outside the local stack a secret must be configured, not generated: refuse to start without one.
    require_configured_secret(settings)
    secret_key(settings)  # the local stack's is generated now, once, not by the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url(settings)
        require_migrated(url)  # applied by `sightline migrate`, never by the API itself
        app.state.settings = settings
        app.state.store = store_from_settings(settings)
        app.state.temporal = temporal_client or await connect(settings.temporal_address, settings.temporal_namespace,
                                                              tracing=tracing_configured())
        # Batches start with search attributes; register them here too, whoever started first.
        await ensure_search_attributes(app.state.temporal, settings.temporal_namespace, sa.ALL)
        async with open_pool(url) as pool:
            app.state.pool = pool
            yield

    app = FastAPI(
        title="Sightline",
        version="0.1.0",
        description="Durable orchestration for production computer vision: submit frame batches, "
        "read predictions, review uncertain frames, retrain and roll out models.",
        lifespan=lifespan,
        # Every body is bounded before it is read: by its Content-Length, and by the bytes that stream
        # in; forms get part limits too (Starlette's defaults take 1000 files and fields).
        max_body_size=settings.max_request_bytes,
        form_limits=FORM_LIMITS,
    )
    register_error_handlers(app)
    if tracing_configured():  # a request's span is the root of its batch's trace (infra.telemetry)
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,metrics,static",
                                           exclude_spans=["receive", "send"])
    app.middleware("http")(metrics.timing_middleware)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(prometheus_router)
    app.include_router(batches.router)
    app.include_router(uploads.router)
    app.include_router(frames.router)
    app.include_router(cameras.router)
    app.include_router(drift.router)
    app.include_router(retraining.router)
    app.include_router(models.router)
    app.include_router(rollouts.router)
    app.include_router(privacy.router)
    app.include_router(deletions.router)
    app.include_router(datasets.router)
    # The reviewer page keeps server-side sessions (api.auth); no cookie middleware, no key in a cookie.
    app.include_router(reviews.router)
    app.include_router(review_page.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).resolve().parent / "static"), name="static")
    return app


def main() -> None:
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level, service="api")
    configure_tracing(tracing_options(settings), "api")
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)


if __name__ == "__main__":
    main()
