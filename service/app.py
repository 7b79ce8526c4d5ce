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
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import make_asgi_app
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import service
from service.api.errors import install_error_handlers
from service.api.health import build_health_router
from service.api.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from service.api.request_id import RequestIdMiddleware
from service.api.routes import build_router
from service.errors import UnknownModel
from service.metrics import Metrics
from service.pipeline import UNRESOLVED, Door, Pipeline
from service.pool import ModelPool
from service.repository import scan_repository
from service.settings import Settings
from service.v2.grpc_server import start_grpc_server
from service.v2.rest import build_v2_router

logger = logging.getLogger(__name__)


def door_of(path: str) -> Door | None:
    """Which front door an inference path belongs to (None: not an inference path)."""
    if path == "/classify":
        return "classify"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2-rest"
    return None


class _Asgi:
    """An ASGI app as a route endpoint: Starlette calls a plain function as
    ``endpoint(request)``, and a ``Mount`` would answer ``/metrics`` with a redirect."""

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
    decode_threads = ThreadPoolExecutor(
        max_workers=settings.effective_decode_threads(), thread_name_prefix="decode"
    )
    pipeline = Pipeline(pool, settings, metrics, decode_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # V2 gRPC on this same event loop and pipeline (None when grpc_port is 0).
        grpc_server = await start_grpc_server(app, settings)
        # Load in the background: /health/live answers at once, /health/ready waits.
        loading = asyncio.create_task(pool.load(), name="load-models")
        try:
            yield
        finally:
            app.state.draining = True
            if grpc_server is not None:  # finish accepted calls while the batchers still run
                await grpc_server.stop(settings.drain_timeout_s)
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await pool.stop(settings.drain_timeout_s)
            decode_threads.shutdown(wait=True, cancel_futures=True)

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
    app.state.draining = False
    install_error_handlers(app)
    app.include_router(build_router(settings))
    app.include_router(build_health_router(settings))
    app.include_router(build_v2_router(settings))
    # prometheus_client's own app: text or OpenMetrics by Accept, gzip by Accept-Encoding.
    metrics_app = _Asgi(make_asgi_app(registry=metrics.registry))
    app.router.routes.append(Route("/metrics", metrics_app, methods=["GET"]))

    def fallback_labels(scope: Scope) -> tuple[str, str]:
        """Labels for requests refused before the pipeline resolved their model."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = (query.get("model") or [pool.default_name or ""])[0]
        try:
            return pool.get(name).key
        except UnknownModel:
            return UNRESOLVED

    # Added inner to outer: metrics must see the 413s the body limit sends itself.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-Timeout-Ms"],
        )
    app.add_middleware(
        RequestMetricsMiddleware,
        metrics=metrics,
        door_of=door_of,
        fallback_labels=fallback_labels,
    )
    # Outermost: every answer, even one sent by the middleware above, carries the id.
    app.add_middleware(RequestIdMiddleware)
    return app
