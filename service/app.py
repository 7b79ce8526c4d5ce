"""``create_app(settings)``: the composition root. Builds the model pool, the request
pipeline and every front door (``/classify``, V2 REST, V2 gRPC), and hangs them on
``app.state``; it sits above the doors so that none of them imports another's module.

Nothing is global: the repository, metrics, model pool, decode threads and the request
pipeline belong to the app, so tests can run several apps side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import make_asgi_app
from starlette.types import ASGIApp, Receive, Scope, Send

import service
from service import tracing
from service.api.errors import install_error_handlers
from service.api.health import build_health_router
from service.api.request_id import RequestIdMiddleware
from service.api.routes import build_router
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.pool import ModelPool
from service.repository import scan_repository
from service.settings import Settings
from service.v2.grpc_server import start_grpc_server
from service.v2.rest import build_v2_router

logger = logging.getLogger(__name__)
#: Paths never traced: probes and scrapes would drown the requests worth a trace.
UNTRACED_PATHS = "/health/,/v2/health/,/metrics"


class _AsgiEndpoint:
    """An ASGI app as a route endpoint (Starlette wraps plain functions as handlers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, pool: ModelPool | None = None) -> FastAPI:
    """The service app. ``pool`` lets tests serve models over a fake engine factory."""
    if pool is None:
        entries = scan_repository(settings.repository, only=settings.model_names())
        pool = ModelPool(entries, settings, Metrics())
    metrics = pool.metrics
    pipeline = Pipeline(pool, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # V2 gRPC on this same event loop and pipeline (None when grpc_port is 0).
        grpc_server = await start_grpc_server(pipeline, settings)
        # Load in the background: /health/live answers at once, /health/ready waits.
        loading = asyncio.create_task(pool.load(), name="load-models")
        try:
            yield
        finally:
            pipeline.readiness.draining = True
            if grpc_server is not None:  # finish accepted calls while the batchers still run
                await grpc_server.stop(settings.drain_timeout_s)
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await pool.stop(settings.drain_timeout_s)
            pipeline.close()

    app = FastAPI(
        title="resnet-serve",
        version=service.__version__,
        description="Classify images with ResNet models: top-k labels and scores.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = pool
    app.state.pipeline = pipeline
    install_error_handlers(app)
    app.include_router(build_router(settings))
    app.include_router(build_health_router())
    app.include_router(build_v2_router(settings))
    # prometheus_client's own ASGI app: content negotiation (text or OpenMetrics) and
    # gzip as the scraper asks, for this app's registry only. A route, not a mount, so
    # /metrics answers without a redirect to /metrics/.
    metrics_app = _AsgiEndpoint(make_asgi_app(registry=metrics.registry))
    app.add_route("/metrics", metrics_app, include_in_schema=False)  # type: ignore[arg-type]

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-Timeout-Ms"],
        )
    if (provider := tracing.provider()) is not None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        # The server span of every HTTP request, continuing the caller's traceparent.
        app.add_middleware(
            OpenTelemetryMiddleware,
            tracer_provider=provider,
            excluded_urls=UNTRACED_PATHS,
            exclude_spans=["receive", "send"],
        )
    # Outermost: every answer, even one sent by the middleware above, carries the id.
    app.add_middleware(RequestIdMiddleware)
    return app
