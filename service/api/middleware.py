"""Pure ASGI middleware: the streaming body limit and per-request metrics.

Both sit outside FastAPI's routing so they also see requests that never reach a route
(a body refused by its Content-Length, a 422 from query validation).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.metrics import Metrics


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
            await _send_json(
                send,
                413,
                {
                    "error": {
                        "code": PayloadTooLarge.code,
                        "message": f"request body is {declared} bytes; at most {self.max_bytes} "
                        "are accepted",
                        "max_body_bytes": self.max_bytes,
                    }
                },
            )
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
    """Counts /classify outcomes by status code and times them end to end.

    The route stores the resolved model's metric labels in ``scope['state']``; requests
    refused before that are labelled by ``fallback_labels`` (bounded cardinality: an
    unknown model name never becomes a label value).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        fallback_labels: Callable[[Scope], tuple[str, str]],
        path: str = "/classify",
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.fallback_labels = fallback_labels
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
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
            state = scope.get("state") or {}
            labels = state.get("metric_labels") or self.fallback_labels(scope)
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


async def _send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
