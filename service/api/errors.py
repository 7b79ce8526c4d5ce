"""The one mapping from errors to HTTP responses.

Every error body has the same shape, ``{"error": {"code", "message", ...details}}``.
4xx bodies say what was wrong and what is allowed; 5xx bodies never show internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError, status_of

logger = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error; see the server log"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    /,
    **details: Any,
) -> JSONResponse:
    # Positional-only, and code/message win: a detail named "status", "code" or "message"
    # (e.g. a model's status) can neither clash with the arguments nor hide the code.
    extra = {k: v for k, v in details.items() if k not in ("code", "message")}
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}},
        status_code=status,
        headers=headers,
    )


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The response for a typed error; also used by middleware that answers by itself."""
    if exc.status >= 500 and exc.code == ServiceError.code:
        return error_response(exc.status, exc.code, INTERNAL_MESSAGE)
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return error_response(exc.status, exc.code, exc.message, headers, **exc.details)


def http_error(exc: BaseException, *, close: bool = False) -> JSONResponse:
    """The ``/classify`` door's error table: a typed error as itself, anything else a 500
    that shows no internals (the pipeline logged it). ``close``: the body was not read to
    its end, so the connection must close, or its rest would be read as a new request."""
    if isinstance(exc, ServiceError):
        response = service_error_response(exc)
    else:
        response = error_response(status_of(exc), "internal_error", INTERNAL_MESSAGE)
    if close:
        response.headers["Connection"] = "close"
    return response


def validation_problems(errors: Sequence[Any], *, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic's errors as ``{"where", "problem"}`` pairs (the 422 body's ``problems``)."""
    where = (prefix,) if prefix else ()
    return [
        {
            "where": ".".join(str(p) for p in (*where, *err.get("loc", ()))),
            "problem": str(err.get("msg", ""))[:200],
        }
        for err in errors
    ]


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = validation_problems(exc.errors())
    summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
    return error_response(
        422, "invalid_parameter", f"invalid request: {summary}", problems=problems
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
