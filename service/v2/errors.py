"""The one mapping from the service's typed errors to the V2 protocol's error shapes.

REST: the protocol's ``{"error": "<message>"}`` body (what ``tritonclient`` reads) with
the HTTP status the error carries, the same status ``/classify`` answers (README).
gRPC: one status code per HTTP status, in :data:`GRPC_CODES`. A full queue is
``UNAVAILABLE``, as Triton answers it: gRPC clients treat that code as "retry later",
while ``RESOURCE_EXHAUSTED`` is what gRPC itself uses for a message over the size limit,
so our 413s use it too. 5xx messages never show internals.
"""

from __future__ import annotations

import logging

import grpc
from fastapi.responses import JSONResponse

from service.errors import ServiceError

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; see the server log"

GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(exc: BaseException) -> int:
    return exc.status if isinstance(exc, ServiceError) else 500


def public_message(exc: BaseException) -> str:
    """What the client may read: the message of a 4xx/503/504, never a 500's internals."""
    if isinstance(exc, ServiceError) and exc.status != 500:
        return exc.message
    logger.error("V2 request failed", exc_info=exc)
    return INTERNAL_MESSAGE


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    return GRPC_CODES.get(status_of(exc), grpc.StatusCode.INTERNAL)


def retry_after(exc: BaseException) -> str | None:
    """Seconds to wait before a retry helps (REST ``Retry-After``, gRPC ``retry-after``)."""
    if isinstance(exc, ServiceError) and exc.retry_after_s is not None:
        return str(exc.retry_after_s)
    return None


def rest_error(exc: BaseException) -> JSONResponse:
    wait = retry_after(exc)
    return JSONResponse(
        {"error": public_message(exc)},
        status_code=status_of(exc),
        headers={"Retry-After": wait} if wait else None,
    )
