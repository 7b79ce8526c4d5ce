"""Typed errors of the request path.

Each error carries its HTTP status and a stable machine-readable ``code``; the one
mapping to HTTP lives in :mod:`service.api.errors`. Messages say what was wrong and
what is allowed, because the client reading them usually cannot see our logs.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service answers on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class BadImage(BadRequest):
    """The bytes are not a decodable image of an allowed format."""

    code = "bad_image"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class TooManyImages(PayloadTooLarge):
    code = "too_many_images"


class ImageTooLarge(PayloadTooLarge):
    """Pixel count above the limit: refused before decoding (decompression bombs)."""

    code = "image_too_large"


class UnknownModel(ServiceError):
    status = 404
    code = "unknown_model"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Overloaded(ServiceError):
    """The model's queue is full; the client should retry after a short pause."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.headers["Retry-After"] = str(retry_after_s)


class ModelUnavailable(Overloaded):
    """The model exists but is not serving (failed to load, or shutting down)."""

    code = "model_unavailable"


class DeadlineExceeded(ServiceError):
    """The request waited in the queue past its deadline; its images were not run."""

    status = 504
    code = "deadline_exceeded"


class EngineError(ServiceError):
    """The engine failed on a batch. Details stay in the log, not in the response."""

    status = 500
    code = "engine_error"


class ModelConfigError(Exception):
    """A model folder in the repository is broken; the message names the folder."""
