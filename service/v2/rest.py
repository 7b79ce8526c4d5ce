"""The V2 REST door: ``/v2/...`` on the same port as ``/classify``.

Health, server and model metadata, model config, statistics, the repository index and
``infer`` (JSON and the binary tensor extension). Every route answers errors in the
protocol's shape, ``{"error": "<message>"}``, through :func:`service.v2.errors.rest_error`,
so ``tritonclient.http`` raises them with their message. Path parameters are plain
strings checked here, for the same reason: a malformed version is the protocol's 404,
not FastAPI's 422 body. Health routes need no API key (as ``/health/*``); all others do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api.body import cancel_on_disconnect, read_body
from service.api.deadline import request_timeout_s
from service.api.middleware import mark_observed
from service.errors import UnsupportedMediaType
from service.pipeline import Pipeline
from service.pool import ServedModel
from service.security import check_api_key
from service.settings import Settings
from service.v2 import metadata
from service.v2.errors import rest_error
from service.v2.infer import parse_version, run
from service.v2.rest_codec import HEADER_LENGTH, encode_response, parse_request

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": "error", "content": {"application/json": {"example": {"error": "..."}}}}
    for code in (400, 401, 404, 408, 413, 415, 503, 504)
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": {"type": "object"}},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header then raw tensors (binary tensor data extension).",
            },
        },
    }
}


def build_v2_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["V2 (Open Inference Protocol)"], responses=_ERRORS)

    def pipeline_of(request: Request) -> Pipeline:
        pipeline: Pipeline = request.app.state.pipeline
        return pipeline

    async def answer(
        request: Request, work: Callable[[], Awaitable[Response]], *, guarded: bool = True
    ) -> Response:
        try:
            if guarded:
                check_api_key(settings.api_key, request.headers.get("x-api-key"))
            return await work()
        except Exception as exc:
            return rest_error(exc)

    def resolve(request: Request) -> ServedModel:
        """The model named by the path (``{model}``, optional ``{version}``)."""
        params = request.path_params
        return pipeline_of(request).resolve(params["model"], parse_version(params.get("version")))

    @router.get("", summary="Server metadata")
    async def server_metadata(request: Request) -> Response:
        async def work() -> Response:
            return JSONResponse(metadata.server_metadata())

        return await answer(request, work)

    @router.get("/health/live", summary="Server live")
    async def live() -> Response:
        return JSONResponse({"live": True})

    @router.get("/health/ready", summary="Server ready")
    async def ready(request: Request) -> Response:
        is_ready = metadata.server_ready(pipeline_of(request).models, request.app.state.draining)
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @router.post("/repository/index", summary="Repository index")
    async def repository_index(request: Request) -> Response:
        async def work() -> Response:
            index = metadata.repository_index(pipeline_of(request).models)
            return JSONResponse(index)

        return await answer(request, work)

    @router.get("/models/stats", summary="Statistics of every model")
    @router.get("/models/{model}/stats", summary="Model statistics")
    @router.get("/models/{model}/versions/{version}/stats", summary="Model version statistics")
    async def statistics(request: Request) -> Response:
        async def work() -> Response:
            pipeline = pipeline_of(request)
            models = pipeline.models.all()
            if "model" in request.path_params:
                served = resolve(request)
                same = [m for m in models if m.name == served.name]
                models = [served] if "version" in request.path_params else same
            return JSONResponse(metadata.model_statistics(models, pipeline.metrics.registry))

        return await answer(request, work)

    @router.get("/models/{model}", summary="Model metadata")
    @router.get("/models/{model}/versions/{version}", summary="Model version metadata")
    async def model_metadata(request: Request) -> Response:
        async def work() -> Response:
            served = resolve(request)
            versions = [m for m in pipeline_of(request).models.all() if m.name == served.name]
            return JSONResponse(metadata.model_metadata(served, versions, settings))

        return await answer(request, work)

    @router.get("/models/{model}/config", summary="Model configuration")
    @router.get("/models/{model}/versions/{version}/config", summary="Model version configuration")
    async def model_config(request: Request) -> Response:
        async def work() -> Response:
            return JSONResponse(metadata.model_config(resolve(request), settings))

        return await answer(request, work)

    @router.get("/models/{model}/ready", summary="Model ready")
    @router.get("/models/{model}/versions/{version}/ready", summary="Model version ready")
    async def model_ready(request: Request) -> Response:
        async def work() -> Response:
            is_ready = resolve(request).serving
            return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

        return await answer(request, work, guarded=False)

    @router.post("/models/{model}/infer", summary="Inference", openapi_extra=_INFER_BODY)
    @router.post(
        "/models/{model}/versions/{version}/infer",
        summary="Inference on a model version",
        openapi_extra=_INFER_BODY,
    )
    async def infer(request: Request) -> Response:
        async def work() -> Response:
            encoding = request.headers.get("content-encoding", "identity").lower()
            if encoding != "identity":
                raise UnsupportedMediaType(
                    f"Content-Encoding {encoding!r} is not accepted", allowed="identity"
                )
            params = request.path_params
            timeout_s = request_timeout_s(request)
            mark_observed(request)  # the pipeline counts it from here on
            async with pipeline_of(request).request(
                "v2-rest",
                model=params["model"],
                version=parse_version(params.get("version")),
                timeout_s=timeout_s,
            ) as scope:
                body = await read_body(request, scope)
                parsed = parse_request(body, request.headers.get(HEADER_LENGTH))
                outcome, outputs = await cancel_on_disconnect(request, run(scope, parsed))
            served = outcome.model
            content, header_length = encode_response(served.name, served.number, parsed.id, outputs)
            if header_length is None:
                return Response(content, media_type="application/json")
            return Response(
                content,
                media_type="application/octet-stream",
                headers={HEADER_LENGTH: str(header_length)},
            )

        return await answer(request, work)

    return router
