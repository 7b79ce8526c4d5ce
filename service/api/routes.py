"""Routes of the ``/classify`` door: HTTP work only (parse, call the pipeline, shape JSON)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.body import cancel_on_disconnect, read_images
from service.api.middleware import mark_observed
from service.api.schemas import (
    ClassifyResponse,
    ErrorResponse,
    ImageResult,
    ModelInfo,
    ModelsResponse,
    Timings,
)
from service.errors import BadRequest
from service.pipeline import Outcome, Pipeline
from service.pool import ModelPool, ServedModel
from service.postprocess import top_k as top_k_predictions
from service.security import check_api_key
from service.settings import Settings

TIMEOUT_HEADER = "X-Request-Timeout-Ms"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 415, 422, 503, 504)
}

_CLASSIFY_BODY = {
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
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    async def require_api_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        check_api_key(settings.api_key, x_api_key)

    guarded = [Depends(require_api_key)]

    @router.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=_ERRORS,
        dependencies=guarded,
        openapi_extra=_CLASSIFY_BODY,
        summary="Classify one or more images",
    )
    async def classify(
        request: Request,
        top_k: Annotated[int, Query(ge=1, le=settings.max_top_k)] = 5,
        model: Annotated[str | None, Query(max_length=64)] = None,
        version: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        pipeline: Pipeline = request.app.state.pipeline
        timeout_s = request_timeout_s(request)
        mark_observed(request)
        async with pipeline.request(
            "classify", model=model, version=version, timeout_s=timeout_s
        ) as call:
            images = await read_images(request, call, settings.max_images_per_request)
            outcome = await cancel_on_disconnect(request, call.classify_images(images))
        body = classify_response(outcome, [image.name for image in images], top_k)
        return Response(body.model_dump_json(), media_type="application/json")

    @router.get("/models", response_model=ModelsResponse, dependencies=guarded)
    async def models(request: Request) -> ModelsResponse:
        pool: ModelPool = request.app.state.models
        return ModelsResponse(
            default_model=pool.default_name, models=[_model_info(pool, m) for m in pool.all()]
        )

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        """The process answers: the event loop is not blocked. Nothing more is checked."""
        return {"status": "alive"}

    @router.get("/health/ready", responses={503: {"description": "not ready"}})
    async def ready(request: Request) -> JSONResponse:
        pool: ModelPool = request.app.state.models
        models = {f"{m.name}:{m.number}": m.status for m in pool.all()}
        serving = [m for m in pool.all() if m.serving]
        draining = bool(request.app.state.draining)
        is_ready = pool.loaded and bool(serving) and not draining
        status = "draining" if draining else ("ready" if is_ready else "not ready")
        unavailable = {k: v for k, v in models.items() if v != "ready"}
        return JSONResponse(
            {"status": status, "models": models, "unavailable": unavailable},
            status_code=200 if is_ready else 503,
        )

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def request_timeout_s(request: Request) -> float | None:
    """The client's own deadline (``X-Request-Timeout-Ms``); it can only shorten ours."""
    header = request.headers.get(TIMEOUT_HEADER)
    if header is None:
        return None
    try:
        asked_ms = float(header)
    except ValueError:
        asked_ms = -1.0
    if not asked_ms > 0 or asked_ms == float("inf"):
        raise BadRequest(
            f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {header!r}"
        )
    return asked_ms / 1000.0


def classify_response(outcome: Outcome, names: list[str | None], top_k: int) -> ClassifyResponse:
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
