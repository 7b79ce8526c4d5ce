"""The client's own deadline on HTTP: ``X-Request-Timeout-Ms``, shared by both HTTP doors."""

from __future__ import annotations

from starlette.requests import Request

from service.errors import BadRequest

TIMEOUT_HEADER = "X-Request-Timeout-Ms"


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
