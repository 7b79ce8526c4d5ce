"""Pure ASGI middleware: one id per HTTP request, in the logs, the trace and the answer.

The id comes from the caller's ``X-Request-ID`` when it is usable (printable ASCII, at
most 128 characters: it ends up in log lines and headers, so nothing else is trusted),
otherwise a fresh uuid4 hex. It is echoed in the response's ``X-Request-ID`` header, set
in :data:`service.logs.request_id_var` for every log line written while handling the
request, and recorded on the request's server span when tracing is on.

It is the outermost middleware, so answers sent by inner middleware (a 413 from the body
limit) carry the id too.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id_var
from service.tracing import server_span

HEADER = "X-Request-ID"
MAX_LENGTH = 128
_HEADER_KEY = HEADER.lower().encode("latin-1")


def usable_request_id(value: str) -> bool:
    """Printable ASCII (space to tilde), 1..128 characters."""
    return 0 < len(value) <= MAX_LENGTH and all(" " <= c <= "~" for c in value)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        asked = headers.get(HEADER.lower())
        request_id = asked if asked is not None and usable_request_id(asked) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            with server_span(
                f"{scope['method']} {scope['path']}",
                headers,
                request_id=request_id,
                **{"http.request.method": scope["method"], "url.path": scope["path"]},
            ) as span:

                async def send_with_id(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        span.set("http.response.status_code", message["status"])
                        kept = [
                            h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY
                        ]
                        kept.append((_HEADER_KEY, request_id.encode("latin-1")))
                        message = {**message, "headers": kept}
                    await send(message)

                await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
