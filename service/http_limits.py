"""Bounds below ASGI: the size of a request's head (request line and headers).

uvicorn's default HTTP parser (httptools) accepts request heads of any size: a client
sending a 20 MB header made the server hold it (measured here). Bodies are bounded by
the body budget, but a head is parsed before any ASGI code runs, so its bound must live
in the protocol: :class:`BoundedHeadHttp` counts the bytes of a request's head as they
arrive and, past ``max_header_bytes``, answers 431 and closes the connection. With
``max_connections`` (uvicorn's ``limit_concurrency``) this bounds what heads can hold:
``max_connections x (max_header_bytes + one read of 256 KiB)``.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.errors import service_error_response
from service.errors import HeadersTooLarge


class BoundedHeadHttp(HttpToolsProtocol):
    """httptools' protocol with a bound on the request head; see the module docstring."""

    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # Counted after parsing, whole reads at a time: the head may hold at most one
        # read (256 KiB) more than the bound before the connection is closed.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        # A head that arrived in one read is only known whole here: measure it exactly,
        # before uvicorn starts the request.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refuse_head()
            return
        super().on_headers_complete()

    def _refuse_head(self) -> None:
        response = service_error_response(
            HeadersTooLarge(
                f"the request line and headers passed {self.max_header_bytes} bytes, "
                "the most accepted",
                max_header_bytes=self.max_header_bytes,
            )
        )
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in response.raw_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + response.body)
        self.transport.close()
        self._in_head = False


def bounded_head_protocol(max_header_bytes: int) -> type[BoundedHeadHttp]:
    """The protocol class for uvicorn's ``http=``, with this server's bound."""
    return type("BoundedHeadHttp", (BoundedHeadHttp,), {"max_header_bytes": max_header_bytes})
