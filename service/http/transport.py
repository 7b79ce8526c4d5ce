"""The HTTP transport of a call, shared by ``/classify`` and V2 REST.

What the pipeline asks of a door's transport, read from one ASGI request: the request
id (set by :class:`~service.api.request_id.RequestIdMiddleware`), the declared body
length, the client's own deadline (``X-Request-Timeout-Ms``), the body's chunks as they
arrive, and the moment the client hangs up. Bounds are the pipeline's; this module only
reads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from service.errors import BadRequest, ClientGone, PayloadTooLarge
from service.pipeline.call import never

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
#: Digits in a Content-Length we parse: 18 digits already exceed any body we take, and
#: the bound keeps int() linear whatever the header holds.
_MAX_LENGTH_DIGITS = 18


class HttpTransport:
    """One HTTP request as the pipeline reads it."""

    def __init__(self, request: Request) -> None:
        self.request = request
        #: True once the body was read to its end: an error answered before that closes
        #: the connection, or the unread rest would be parsed as the next request.
        self.body_complete = False

    @property
    def request_id(self) -> str:
        state = self.request.scope.get("state") or {}
        request_id = state.get("request_id")
        return request_id if isinstance(request_id, str) else uuid.uuid4().hex

    def api_key(self) -> str | None:
        return self.request.headers.get("x-api-key")

    def content_length(self) -> int | None:
        """The declared body length; malformed or negative is the client's 400."""
        value = self.request.headers.get("content-length")
        if value is None:
            return None
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > _MAX_LENGTH_DIGITS:
            raise BadRequest(
                f"Content-Length {value[:32]!r} is not a non-negative integer",
                allowed="digits only",
            )
        return int(text)

    def timeout_s(self) -> float | None:
        """The client's own deadline (``X-Request-Timeout-Ms``); it can only shorten ours."""
        header = self.request.headers.get(TIMEOUT_HEADER)
        if header is None:
            return None
        try:
            asked_ms = float(header)
        except ValueError:
            asked_ms = -1.0
        if not asked_ms > 0 or asked_ms == float("inf"):
            raise BadRequest(
                f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {header[:32]!r}"
            )
        return asked_ms / 1000.0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as the server receives them; a hang-up is :class:`ClientGone`."""
        receive = self.request.receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("the client hung up while sending the body")
            chunk: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if chunk:
                yield chunk
            if not more:
                self.body_complete = True
                return

    async def disconnected(self) -> None:
        """Returns when the client disconnects; after the body, ``receive`` only says that."""
        if not self.body_complete:
            return await never()
        while (await self.request.receive())["type"] != "http.disconnect":
            pass


#: Largest body of a small JSON call (repository index, load, unload).
SMALL_BODY_BYTES = 64 * 1024


async def small_json(request: Request) -> dict[str, Any]:
    """The JSON object of a small control body (empty: ``{}``), read within a bound:
    these routes are not the pipeline's, but no body is read unbounded."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length[:12]) > SMALL_BODY_BYTES):
        raise PayloadTooLarge(
            f"this call takes a JSON body of at most {SMALL_BODY_BYTES} bytes",
            max_body_bytes=SMALL_BODY_BYTES,
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > SMALL_BODY_BYTES:
            raise PayloadTooLarge(
                f"this call takes a JSON body of at most {SMALL_BODY_BYTES} bytes",
                max_body_bytes=SMALL_BODY_BYTES,
            )
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    return document
