"""Pure ASGI middleware: one id per HTTP request, in the logs, the span and the answer.

The id comes from the caller's ``X-Request-ID`` when it is usable (the rule is
:func:`service.logs.request_id_from`, the same for gRPC's ``x-request-id``), otherwise a
fresh uuid4 hex. It is echoed in the response's ``X-Request-ID`` header, set in
:data:`service.logs.request_id_var` for every log line written while handling the
request, and kept in the request's state, where the pipeline reads it for the call.

It is the outermost middleware, so every answer, even one sent before routing, carries it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id_from, request_id_var

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == _HEADER_KEY), None
        )
        request_id = request_id_from(asked)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY]
                kept.append((_HEADER_KEY, request_id.encode("latin-1")))
                message = {**message, "headers": kept}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
