"""The V2 REST door: ``/v2/...`` on the same port as ``/classify``.

Health, server and model metadata, model config, statistics, the repository index and
``infer`` (JSON and the binary tensor extension). Inference is a :class:`RestInferCall`
served by the pipeline; metadata comes from :mod:`service.v2.metadata` (the same
messages gRPC sends) and health from :class:`service.readiness.Readiness` (the same rule
as ``/health/*``). Every route answers errors in the protocol's shape through
:func:`service.v2.errors.rest_error`, so ``tritonclient.http`` raises them with their
message. Path parameters are plain strings checked here, so a malformed version is the
protocol's 404, not FastAPI's 422. Health routes need no API key (as ``/health/*``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.errors import BadRequest, UnsupportedMediaType
from service.http.routing import TracedRoute
from service.http.transport import HttpTransport, small_json
from service.lifecycle import ADMIN_KEY_HEADER
from service.pipeline import Door, Head, Outcome, Parsed, Pipeline
from service.pool import ServedModel
from service.security import check_api_key
from service.settings import Settings
from service.v2 import metadata
from service.v2.errors import rest_error
from service.v2.infer import Reply, limits_of, to_inputs
from service.v2.repository import Action, control
from service.v2.rest_codec import HEADER_LENGTH, RestInferParser, encode_response

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


class RestInferCall(HttpTransport):
    """One V2 REST inference, as the pipeline sees it."""

    door: Door = "v2-rest"

    def __init__(self, request: Request, settings: Settings) -> None:
        super().__init__(request)
        self._settings = settings

    async def head(self) -> Head:
        encoding = self.request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise UnsupportedMediaType(
                f"Content-Encoding {encoding[:32]!r} is not accepted", allowed="identity"
            )
        params = self.request.path_params
        return Head(
            model=params["model"],
            version=params.get("version"),
            api_key=self.api_key(),
            timeout_s=self.timeout_s(),
            content_length=self.content_length(),
        )

    def parser(self, served: ServedModel) -> RestInferParser[Reply]:
        limits = limits_of(served, self._settings.max_images_per_request)
        return RestInferParser(
            self.request.headers.get(HEADER_LENGTH),
            limits,
            self._settings.max_json_values,
            lambda request: to_inputs(request, served),
        )

    def encode(self, parsed: Parsed[Reply], outcome: Outcome) -> Response:
        served, reply = outcome.model, parsed.extra
        content, header_length = encode_response(
            served.name, served.number, reply.id, reply.outputs_for(outcome)
        )
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )


def build_v2_router(settings: Settings) -> APIRouter:
    router = APIRouter(
        prefix="/v2",
        tags=["V2 (Open Inference Protocol)"],
        responses=_ERRORS,
        route_class=TracedRoute,
    )

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
        return pipeline_of(request).resolve(params["model"], params.get("version"))

    def message(body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(metadata.to_rest(body), status_code=status)

    @router.get("", summary="Server metadata")
    async def server_metadata(request: Request) -> Response:
        async def work() -> Response:
            return message(metadata.server_metadata())

        return await answer(request, work)

    @router.get("/health/live", summary="Server live")
    async def live(request: Request) -> Response:
        is_live = pipeline_of(request).readiness.live().ok
        return JSONResponse({"live": is_live}, status_code=200 if is_live else 503)

    @router.get("/health/ready", summary="Server ready")
    async def ready(request: Request) -> Response:
        is_ready = pipeline_of(request).readiness.ready().ok
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @router.post("/repository/index", summary="Repository index")
    async def repository_index(request: Request) -> Response:
        async def work() -> Response:
            body = await small_json(request)
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise BadRequest("'ready' must be true or false")
            index = metadata.repository_index(pipeline_of(request).models.index(ready=ready))
            return JSONResponse(metadata.to_rest(index).get("models", []))

        return await answer(request, work)

    @router.post("/repository/models/{model}/load", summary="Load or reload a model")
    @router.post("/repository/models/{model}/unload", summary="Unload a model")
    async def repository_control(request: Request) -> Response:
        async def work() -> Response:
            presented = request.headers.get(ADMIN_KEY_HEADER)
            body = await small_json(request)
            parameters = body.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise BadRequest("'parameters' must be a JSON object")
            action: Action = "load" if request.url.path.endswith("/load") else "unload"
            pool = pipeline_of(request).models
            admin_key = settings.admin_api_key
            await control(
                pool, admin_key, presented, action, request.path_params["model"], parameters
            )
            return JSONResponse({})

        return await answer(request, work, guarded=False)

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
            return message(metadata.model_statistics(models, pipeline.metrics.registry))

        return await answer(request, work)

    @router.get("/models/{model}", summary="Model metadata")
    @router.get("/models/{model}/versions/{version}", summary="Model version metadata")
    async def model_metadata(request: Request) -> Response:
        async def work() -> Response:
            served = resolve(request)
            versions = pipeline_of(request).models.versions_of(served.name)
            return message(metadata.model_metadata(served, versions))

        return await answer(request, work)

    @router.get("/models/{model}/config", summary="Model configuration")
    @router.get("/models/{model}/versions/{version}/config", summary="Model version configuration")
    async def model_config(request: Request) -> Response:
        async def work() -> Response:
            return message(metadata.model_config(resolve(request), settings.max_queue_delay_ms))

        return await answer(request, work)

    @router.get("/models/{model}/ready", summary="Model ready")
    @router.get("/models/{model}/versions/{version}/ready", summary="Model version ready")
    async def model_ready(request: Request) -> Response:
        async def work() -> Response:
            served = resolve(request)  # an unknown model or version is the protocol's 404
            is_ready = pipeline_of(request).readiness.model_ready(served.name, served.number)
            return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

        return await answer(request, work, guarded=False)

    @router.post("/models/{model}/infer", summary="Inference", openapi_extra=_INFER_BODY)
    @router.post(
        "/models/{model}/versions/{version}/infer",
        summary="Inference on a model version",
        openapi_extra=_INFER_BODY,
    )
    async def infer(request: Request) -> Response:
        call = RestInferCall(request, settings)
        try:
            return await pipeline_of(request).serve(call)
        except Exception as exc:
            return rest_error(exc, close=not call.body_complete)

    return router
