"""Typed errors of the request path.

Each error carries its HTTP status, a stable machine-readable ``code`` and, for the
ones a client should retry, ``retry_after_s``. Each protocol maps them in one place:
HTTP in :mod:`service.api.errors`, gRPC in :mod:`service.v2.errors`. Messages say what
was wrong and what is allowed, because the client reading them cannot see our logs.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service answers on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    #: Seconds a client should wait before retrying; None: retrying will not help.
    retry_after_s: int | None = None

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class BadImage(BadRequest):
    """The bytes are not a decodable image of an allowed format."""

    code = "bad_image"


class InvalidParameter(ServiceError):
    """A query or path parameter outside what the endpoint takes (FastAPI's 422 shape)."""

    status = 422
    code = "invalid_parameter"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class UnknownModel(ServiceError):
    status = 404
    code = "unknown_model"


class RequestTimeout(ServiceError):
    """The request body did not arrive before the request's deadline."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class TooManyImages(PayloadTooLarge):
    code = "too_many_images"


class ImageTooLarge(PayloadTooLarge):
    """Pixel count above the limit: refused from the header, before decoding."""

    code = "image_too_large"


class ImageTooCostly(PayloadTooLarge):
    """Decode work (pixels x passes, JPEG scans, chunks) above what the service decodes.

    Refused from the header and a walk over the markers, before any pixel is decoded:
    a decode cannot be interrupted once it starts (see :mod:`service.decode_cost`).
    """

    code = "image_too_costly"


class HeadersTooLarge(ServiceError):
    """The request line and headers are larger than the server takes."""

    status = 431
    code = "request_header_fields_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class NotAnImage(UnsupportedMediaType):
    """Bytes that no allowed image format recognises: a bad *tensor element* to the V2
    protocol (400 there), an unsupported media type to ``/classify`` (415), with the
    same code as ever."""


class ClientGone(ServiceError):
    """The client hung up; its work was cancelled. Nobody reads the answer (nginx's 499)."""

    status = 499
    code = "client_closed_request"


class Overloaded(ServiceError):
    """A queue or a memory budget is full; the client should retry after a short pause."""

    status = 503
    code = "overloaded"
    retry_after_s = 1


class ModelUnavailable(ServiceError):
    """The model exists but is not serving (loading, failed to load, or shutting down)."""

    status = 503
    code = "model_unavailable"
    retry_after_s = 5


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its images were run; they were not run."""

    status = 504
    code = "deadline_exceeded"


class EngineError(ServiceError):
    """The engine failed on a batch. Details stay in the log, not in the response."""

    status = 500
    code = "engine_error"


def status_of(exc: BaseException) -> int:
    """The HTTP status a request that ended with ``exc`` is answered and counted under.

    One rule for every door: a typed error carries its status; a cancelled request is
    a client that left (499); anything else is a server fault (500), a bug with a test.
    """
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, asyncio.CancelledError):
        return ClientGone.status
    return 500


class ModelControlNotAllowed(ServiceError):
    """A repository call the model control mode does not allow (Triton refuses the same):
    'none' reads the repository once; 'poll' follows the repository folder itself."""

    status = 409
    code = "model_control_not_allowed"


class ModelLoadFailed(ServiceError):
    """A load that did not end with the model serving the asked versions. Whatever was
    serving before still serves; ``details['versions']`` holds each version's state and
    reason. A 4xx: the cause is the repository's content, which the operator fixes."""

    status = 400
    code = "model_load_failed"


class ModelMemoryExceeded(ModelLoadFailed):
    """The load would take the loaded versions past ``model_memory_budget_bytes``."""

    status = 409
    code = "model_memory_budget_exceeded"


class ModelConfigError(Exception):
    """A model folder in the repository is broken; the message names the folder."""


class SettingsError(Exception):
    """Settings that contradict each other; the message names them and what is allowed."""
