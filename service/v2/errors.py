"""The V2 protocol's error tables: the service's typed errors as REST bodies and gRPC codes.

One set of typed errors (:mod:`service.errors`) feeds both, so the same fault is the
same class of answer on every door. REST: the protocol's ``{"error": "<message>"}`` body
(what ``tritonclient`` reads) with the error's HTTP status, except that bytes which are
not an image are a bad *tensor element* here, the protocol's 400 (``/classify`` answers
415). gRPC: one status code per HTTP status, in :data:`GRPC_CODES`. A full queue or a
door at its limit is ``UNAVAILABLE``, as Triton answers it: gRPC clients treat that code
as "retry later", while ``RESOURCE_EXHAUSTED`` is what gRPC itself uses for a message over
the size limit, so our 413s use it too. 5xx messages never show internals (the pipeline
logged them).
"""

from __future__ import annotations

import grpc
from fastapi.responses import JSONResponse

from service.errors import NotAnImage, ServiceError, status_of

INTERNAL_MESSAGE = "internal error; see the server log"

GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    # A repository call the control mode or the memory budget does not allow.
    409: grpc.StatusCode.FAILED_PRECONDITION,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def rest_status(exc: BaseException) -> int:
    if isinstance(exc, NotAnImage):
        return 400
    return status_of(exc)


def public_message(exc: BaseException) -> str:
    """What the client may read: the message of a 4xx/503/504, never a 500's internals."""
    if isinstance(exc, ServiceError) and exc.status != 500:
        return exc.message
    return INTERNAL_MESSAGE


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    return GRPC_CODES.get(status_of(exc), grpc.StatusCode.INTERNAL)


def retry_after(exc: BaseException) -> str | None:
    """Seconds to wait before a retry helps (REST ``Retry-After``, gRPC ``retry-after``)."""
    if isinstance(exc, ServiceError) and exc.retry_after_s is not None:
        return str(exc.retry_after_s)
    return None


def rest_error(exc: BaseException, *, close: bool = False) -> JSONResponse:
    """The V2 REST error table; ``close``: the body was not read to its end."""
    wait = retry_after(exc)
    headers = {"Retry-After": wait} if wait else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse(
        {"error": public_message(exc)}, status_code=rest_status(exc), headers=headers or None
    )
