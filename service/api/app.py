"""``create_app(settings)``: builds everything and hangs it on ``app.state``.

Nothing is global: the repository, metrics, model pool and decode pool belong to the
app, so tests can run several apps side by side.
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
from starlette.types import Scope

import service
from service.api.errors import install_error_handlers
from service.api.health import build_health_router
from service.api.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from service.api.request_id import RequestIdMiddleware
from service.api.routes import build_router
from service.metrics import Metrics
from service.pool import ModelPool
from service.repository import scan_repository
from service.settings import Settings

logger = logging.getLogger(__name__)

UNKNOWN_LABELS = ("_unknown", "")


def create_app(settings: Settings, *, pool: ModelPool | None = None) -> FastAPI:
    """The service app. ``pool`` lets tests inject models with a fake engine."""
    metrics = pool.metrics if pool is not None else Metrics()
    if pool is None:
        pool = ModelPool(scan_repository(settings.repository), settings, metrics)
    decode_pool = ThreadPoolExecutor(
        max_workers=settings.effective_decode_threads(), thread_name_prefix="decode"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: /health/live answers at once, /health/ready waits.
        loading = asyncio.create_task(pool.load(), name="load-models")
        try:
            yield
        finally:
            app.state.draining = True
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await pool.stop(settings.drain_timeout_s)
            decode_pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="resnet-serve",
        version=service.__version__,
        description="Classify images with ResNet models: top-k labels and scores.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.decode_pool = decode_pool
    app.state.draining = False
    install_error_handlers(app)
    app.include_router(build_router(settings))
    app.include_router(build_health_router(settings))

    def fallback_labels(scope: Scope) -> tuple[str, str]:
        """Labels for requests refused before the route resolved their model."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = (query.get("model") or [pool.default_name or ""])[0]
        try:
            return pool.get(name).labels
        except Exception:
            return UNKNOWN_LABELS

    # Added inner to outer: metrics must see the 413s the body limit sends itself.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-Timeout-Ms"],
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, fallback_labels=fallback_labels)
    # Outermost: every answer, even one sent by the middleware above, carries the id.
    app.add_middleware(RequestIdMiddleware)
    return app
