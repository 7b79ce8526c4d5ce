"""Pure ASGI middleware: the streaming body limit, and metrics for requests refused early.

Both sit outside FastAPI's routing so they also see requests that never reach a route
(a body refused by its Content-Length, a 422 from query validation, a 401).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import service_error_response
from service.errors import PayloadTooLarge
from service.metrics import Metrics
from service.pipeline import UNRESOLVED, Door

#: Set in the request state by a route that hands the request to the pipeline, which
#: then observes its metrics itself (exactly once, with the resolved model).
OBSERVED = "observed_by_pipeline"


def mark_observed(request: Request) -> None:
    setattr(request.state, OBSERVED, True)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` while they stream in, never after buffering.

    A declared Content-Length over the limit is answered 413 before a byte is read;
    a chunked or lying body raises :class:`PayloadTooLarge` from ``receive`` the moment
    the count passes the limit, which the route's error mapping turns into a 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            refusal = PayloadTooLarge(
                f"request body is {declared} bytes; at most {self.max_bytes} are accepted",
                max_body_bytes=self.max_bytes,
            )
            response = service_error_response(refusal)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise PayloadTooLarge(
                        f"request body passed {self.max_bytes} bytes, the most accepted",
                        max_body_bytes=self.max_bytes,
                    )
            return message

        async def closing_send(message: Message) -> None:
            # After a refused body, close the connection with the 413: otherwise the
            # server keeps reading (and discarding) whatever the client still streams.
            if refused and message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited_receive, closing_send)


class RequestMetricsMiddleware:
    """Counts inference requests refused before the pipeline saw them (401, 413, 422...).

    Requests the pipeline takes are observed there, with their model; these are
    labelled by ``fallback_labels`` (bounded cardinality: an unknown model name never
    becomes a label value) and by the door their path belongs to (``door_of``).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        door_of: Callable[[str], Door | None],
        fallback_labels: Callable[[Scope], tuple[str, str]] = lambda _: UNRESOLVED,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.door_of = door_of
        self.fallback_labels = fallback_labels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self.door_of(scope["path"]) if scope["type"] == "http" else None
        if door is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            if not (scope.get("state") or {}).get(OBSERVED):
                labels = (*self.fallback_labels(scope), door)
                self.metrics.requests.labels(*labels, str(status)).inc()
                self.metrics.request_duration.labels(*labels).observe(time.perf_counter() - started)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
