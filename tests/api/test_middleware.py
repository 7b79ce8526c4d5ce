"""The pure ASGI middlewares (service/api/middleware.py) on a bare app."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.api.errors import install_error_handlers
from service.api.middleware import BodyLimitMiddleware, RequestMetricsMiddleware, mark_observed
from service.metrics import Metrics


async def echo_length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def observed(request: Request) -> PlainTextResponse:
    mark_observed(request)
    return PlainTextResponse("seen by the pipeline")


def make_app(metrics: Metrics) -> Starlette:
    app = Starlette(
        routes=[
            Route("/classify", echo_length, methods=["POST"]),
            Route("/observed", observed, methods=["POST"]),
        ]
    )
    install_error_handlers(app)  # type: ignore[arg-type]
    app.add_middleware(BodyLimitMiddleware, max_bytes=100)
    app.add_middleware(
        RequestMetricsMiddleware,
        metrics=metrics,
        door_of=lambda path: "classify" if path in ("/classify", "/observed") else None,
    )
    return app


async def post(app: Starlette, path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post(path, **kwargs)  # type: ignore[arg-type]


def count(metrics: Metrics, code: str) -> float:
    labels = {"model": "_unknown", "version": "", "protocol": "classify", "code": code}
    return metrics.registry.get_sample_value("resnet_serve_requests_total", labels) or 0.0


def test_declared_body_over_the_limit_is_413_before_reading_and_counted() -> None:
    metrics = Metrics()
    response = asyncio.run(post(make_app(metrics), "/classify", content=b"x" * 101))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.headers["connection"] == "close"
    assert count(metrics, "413") == 1


def test_streamed_body_over_the_limit_is_cut_off_with_413() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 50

    response = asyncio.run(post(make_app(Metrics()), "/classify", content=chunks()))
    assert response.status_code == 413
    assert response.json()["error"]["max_body_bytes"] == 100


def test_body_within_the_limit_passes() -> None:
    response = asyncio.run(post(make_app(Metrics()), "/classify", content=b"x" * 100))
    assert response.text == "100"


def test_requests_the_pipeline_observed_are_not_counted_twice() -> None:
    metrics = Metrics()
    asyncio.run(post(make_app(metrics), "/observed", content=b"x"))
    assert count(metrics, "200") == 0
    asyncio.run(post(make_app(metrics), "/classify", content=b"x"))
    assert count(metrics, "200") == 1
