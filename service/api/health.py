"""Probes: ``/health/startup``, ``/health/live`` and ``/health/ready``.

Each answers one question of :class:`service.readiness.Readiness` (the module says what
each means), the same rule the V2 health endpoints and gRPC calls answer: 200 when yes,
503 when not, the body saying why. They need no API key, so orchestrators can probe.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.readiness import Answer, Readiness


def _response(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=200 if answer.ok else 503)


def build_health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])
    not_ready: dict[int | str, dict[str, Any]] = {
        503: {"description": "not (yet) in that state; the body says why"}
    }

    def readiness(request: Request) -> Readiness:
        answers: Readiness = request.app.state.pipeline.readiness
        return answers

    @router.get("/health/startup", responses=not_ready)
    async def startup(request: Request) -> JSONResponse:
        """200 once loading ended with the default model serving; 503 before or if not."""
        return _response(readiness(request).startup())

    @router.get("/health/live", responses=not_ready)
    async def live(request: Request) -> JSONResponse:
        """The loop answers; 503 only once loading ended with nothing worth serving."""
        return _response(readiness(request).live())

    @router.get("/health/ready", responses=not_ready)
    async def ready(request: Request) -> JSONResponse:
        """200 when traffic should come here; 503 naming the models that do not serve."""
        return _response(readiness(request).ready())

    return router
