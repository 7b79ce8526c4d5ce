"""The ``/classify`` door: its transport is HTTP, its parse multipart or a raw image, its
answer JSON top-k labels, its error table :mod:`service.api.errors`. The call itself is
the pipeline's (:meth:`service.pipeline.Pipeline.serve`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from service.api.body import Names, image_parser
from service.api.errors import http_error, validation_problems
from service.api.schemas import (
    ClassifyResponse,
    ErrorResponse,
    ImageResult,
    ModelInfo,
    ModelsResponse,
    Timings,
)
from service.errors import InvalidParameter
from service.http.routing import TracedRoute
from service.http.transport import TIMEOUT_HEADER, HttpTransport
from service.pipeline import BodyParser, Door, Head, Outcome, Parsed, Pipeline
from service.pool import ModelPool, ServedModel
from service.postprocess import top_k as top_k_predictions
from service.security import check_api_key
from service.settings import Settings

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 415, 422, 503, 504)
}


def _classify_openapi(settings: Settings) -> dict[str, Any]:
    """The request as OpenAPI shows it: query parameters and the accepted bodies."""

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "parameters": [
            query(
                "top_k",
                {"type": "integer", "minimum": 1, "maximum": settings.max_top_k, "default": 5},
                "Labels returned per image, best first.",
            ),
            query("model", {"type": "string", "maxLength": 64}, "Model name (default model)."),
            query("version", {"type": "integer", "minimum": 1}, "Model version (default)."),
            {
                "name": TIMEOUT_HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "number", "exclusiveMinimum": 0},
                "description": "Your own deadline; it can only shorten the server's.",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": "One or more images (repeat the field).",
                            }
                        },
                    }
                },
                "image/jpeg": binary,
                "image/png": binary,
                "image/webp": binary,
                "application/octet-stream": binary,
            },
        },
    }


class ClassifyQuery(BaseModel):
    """``/classify``'s query parameters; out of range is 422 with each problem named."""

    top_k: int = Field(5, ge=1)
    model: str | None = Field(None, max_length=64)
    version: str | None = Field(None, max_length=16)


class ClassifyCall(HttpTransport):
    """One ``/classify`` request, as the pipeline sees it."""

    door: Door = "classify"

    def __init__(self, request: Request, settings: Settings) -> None:
        super().__init__(request)
        self._settings = settings
        self.top_k = 5

    async def head(self) -> Head:
        try:
            query = ClassifyQuery.model_validate(dict(self.request.query_params))
        except ValidationError as exc:
            raise _invalid(exc) from None
        if query.top_k > self._settings.max_top_k:
            raise InvalidParameter(
                f"invalid request: query.top_k: at most {self._settings.max_top_k}",
                problems=[
                    {"where": "query.top_k", "problem": f"at most {self._settings.max_top_k}"}
                ],
            )
        self.top_k = query.top_k
        return Head(
            model=query.model,
            version=query.version,
            api_key=self.api_key(),
            timeout_s=self.timeout_s(),
            content_length=self.content_length(),
        )

    def parser(self, served: ServedModel) -> BodyParser[Names]:
        return image_parser(
            self.request.headers.get("content-type"), self._settings.max_images_per_request
        )

    def encode(self, parsed: Parsed[Names], outcome: Outcome) -> Response:
        body = classify_response(outcome, parsed.extra, self.top_k)
        return Response(body.model_dump_json(), media_type="application/json")


def _invalid(exc: ValidationError) -> InvalidParameter:
    problems = validation_problems(exc.errors(), prefix="query")
    summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
    return InvalidParameter(f"invalid request: {summary}", problems=problems)


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(route_class=TracedRoute)

    @router.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=_ERRORS,
        openapi_extra=_classify_openapi(settings),
        summary="Classify one or more images",
    )
    async def classify(request: Request) -> Response:
        pipeline: Pipeline = request.app.state.pipeline
        call = ClassifyCall(request, settings)
        try:
            return await pipeline.serve(call)
        except Exception as exc:
            return http_error(exc, close=not call.body_complete)

    @router.get("/models", response_model=ModelsResponse, responses=_ERRORS)
    async def models(request: Request) -> Response:
        try:
            check_api_key(settings.api_key, request.headers.get("x-api-key"))
        except Exception as exc:
            return http_error(exc)
        pool: ModelPool = request.app.state.models
        body = ModelsResponse(
            default_model=pool.default_name, models=[_model_info(pool, m) for m in pool.all()]
        )
        return Response(body.model_dump_json(), media_type="application/json")

    return router


def classify_response(outcome: Outcome, names: Names, top_k: int) -> ClassifyResponse:
    served, timings = outcome.model, outcome.timings
    return ClassifyResponse(
        model=served.name,
        version=served.number,
        weights=served.weights,
        engine=served.engine_name,
        provider=served.provider,
        precision=served.precision,
        results=[
            ImageResult(
                filename=name, predictions=top_k_predictions(row, top_k, served.class_names)
            )
            for name, row in zip(names, outcome.logits, strict=True)
        ],
        timings=Timings(
            decode_ms=timings.decode_s * 1000,
            queue_ms=timings.queue_s * 1000,
            inference_ms=timings.inference_s * 1000,
            total_ms=timings.total_s * 1000,
            batch_size=timings.batch_size,
        ),
    )


def _model_info(pool: ModelPool, m: ServedModel) -> ModelInfo:
    return ModelInfo(
        name=m.name,
        version=m.number,
        default=pool.default_of(m.name) is m,
        status=m.status,
        error=m.error,
        architecture=m.architecture,
        engine=m.engine_name,
        provider=m.provider,
        precision=m.precision,
        weights=m.weights,
        input_size=list(m.input_shape),
        num_classes=len(m.class_names),
        max_batch_size=m.max_batch_size,
        parity=m.parity,
        quantization=m.quantization,
    )
