"""Routes. ``/classify`` reads top to bottom: read -> reserve -> decode -> batch -> answer."""

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.datastructures import UploadFile

from service.api.schemas import (
    ClassifyResponse,
    ErrorResponse,
    ImageResult,
    ModelInfo,
    ModelsResponse,
    Timings,
)
from service.errors import (
    BadImage,
    BadRequest,
    ServiceError,
    TooManyImages,
    Unauthorized,
    UnsupportedMediaType,
)
from service.pool import ModelPool, ServedModel
from service.postprocess import top_k as top_k_predictions
from service.settings import Settings

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
TIMEOUT_HEADER = "X-Request-Timeout-Ms"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503, 504)
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
        if settings.api_key is None:
            return
        if x_api_key is None or not hmac.compare_digest(x_api_key, settings.api_key):
            raise Unauthorized("missing or wrong X-API-Key header")

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
    ) -> ClassifyResponse:
        started = time.perf_counter()
        pool: ModelPool = request.app.state.pool
        served = pool.get(model, version)
        request.state.metric_labels = served.labels
        deadline = _deadline(request, settings)
        batcher = served.require_batcher()
        batcher.check_room()  # a full queue refuses before the body is even read
        in_flight = pool.metrics.in_flight.labels(*served.labels)
        in_flight.inc()
        try:
            images = await _read_images(request, settings)
            with batcher.reserve(len(images)) as reservation:
                tensors, decode_s = await _decode_all(
                    images,
                    served,
                    request.app.state.decode_pool,
                    pool.metrics.preprocess_duration.labels(*served.labels).observe,
                )
                results = await reservation.submit(tensors, deadline)
        finally:
            in_flight.dec()
        pool.metrics.images.labels(*served.labels).inc(len(images))
        labels = served.entry.config.labels
        info = served.version.info
        return ClassifyResponse(
            model=served.name,
            version=served.number,
            weights=info.weights.display,
            engine=served.engine_name,
            provider=served.provider,
            precision=info.precision,
            results=[
                ImageResult(filename=name, predictions=top_k_predictions(r.logits, top_k, labels))
                for (name, _), r in zip(images, results, strict=True)
            ],
            timings=Timings(
                decode_ms=decode_s * 1000,
                queue_ms=max(r.queue_s for r in results) * 1000,
                inference_ms=max(r.inference_s for r in results) * 1000,
                total_ms=(time.perf_counter() - started) * 1000,
                batch_size=max(r.batch_size for r in results),
            ),
        )

    @router.get("/models", response_model=ModelsResponse, dependencies=guarded)
    async def models(request: Request) -> ModelsResponse:
        pool: ModelPool = request.app.state.pool
        return ModelsResponse(
            default_model=pool.default_name, models=[_model_info(pool, m) for m in pool.all()]
        )

    return router


def _deadline(request: Request, settings: Settings) -> float:
    """Service deadline, shortened (never lengthened) by the client's header."""
    timeout_s = settings.request_timeout_s
    header = request.headers.get(TIMEOUT_HEADER)
    if header is not None:
        try:
            asked_ms = float(header)
        except ValueError:
            asked_ms = -1.0
        if not asked_ms > 0 or asked_ms == float("inf"):
            raise BadRequest(
                f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {header!r}"
            )
        timeout_s = min(timeout_s, asked_ms / 1000.0)
    return time.monotonic() + timeout_s


async def _read_images(request: Request, settings: Settings) -> list[tuple[str | None, bytes]]:
    """(filename, bytes) per image, from multipart ``file`` fields or a raw image body."""
    content_type = request.headers.get("content-type", "").lower()
    limit = settings.max_images_per_request
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=limit + 1, max_fields=limit + 16)
        try:
            uploads = [v for v in form.getlist("file") if isinstance(v, UploadFile)]
            if not uploads:
                fields = sorted(set(form.keys()))
                raise BadRequest(
                    "multipart body has no file in a field named 'file'"
                    + (f" (fields sent: {fields})" if fields else ""),
                    allowed="one or more 'file' fields holding images",
                )
            if len(uploads) > limit:
                raise TooManyImages(
                    f"more than {limit} images in one request", max_images_per_request=limit
                )
            return [(u.filename, await u.read()) for u in uploads]
        finally:
            await form.close()
    if content_type.startswith(RAW_IMAGE_TYPES):
        return [(None, await request.body())]
    raise UnsupportedMediaType(
        f"content type {content_type or '(none)'!r} is not accepted",
        allowed="multipart/form-data with 'file' fields, or a raw body with an image/* "
        "or application/octet-stream content type",
    )


async def _decode_all(
    images: list[tuple[str | None, bytes]],
    served: ServedModel,
    pool: Executor,
    observe: Callable[[float], None],
) -> tuple[list[npt.NDArray[np.float32]], float]:
    """Decode in the thread pool, in parallel; name the file when one is bad."""
    loop = asyncio.get_running_loop()

    def timed(data: bytes) -> tuple[npt.NDArray[np.float32], float]:
        t0 = time.perf_counter()
        tensor = served.preprocessor(data)
        return tensor, time.perf_counter() - t0

    jobs: list[Awaitable[tuple[npt.NDArray[np.float32], float]]] = [
        loop.run_in_executor(pool, timed, data) for _, data in images
    ]
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    tensors: list[npt.NDArray[np.float32]] = []
    slowest = 0.0
    for index, ((name, _), outcome) in enumerate(zip(images, outcomes, strict=True)):
        if isinstance(outcome, ServiceError):
            if len(images) > 1:
                outcome.details.setdefault("image_index", index)
                if name:
                    outcome.details.setdefault("filename", name)
            raise outcome
        if isinstance(outcome, BaseException):
            raise BadImage(f"image {index} could not be decoded") from outcome
        tensor, seconds = outcome
        observe(seconds)
        slowest = max(slowest, seconds)
        tensors.append(tensor)
    return tensors, slowest


def _model_info(pool: ModelPool, m: ServedModel) -> ModelInfo:
    info = m.version.info
    size = m.entry.config.preprocessing.crop_size
    return ModelInfo(
        name=m.name,
        version=m.number,
        default=pool.default_of(m.name) is m,
        status=m.status,
        error=m.error,
        architecture=m.entry.config.architecture,
        engine=m.engine_name,
        provider=m.provider,
        precision=info.precision,
        weights=info.weights.display,
        input_size=[3, size, size],
        num_classes=len(m.entry.config.labels),
        max_batch_size=m.max_batch_size,
        parity={k: v.model_dump() for k, v in info.parity.items()},
        quantization=info.quantization,
    )
