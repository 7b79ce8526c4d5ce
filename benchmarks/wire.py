"""The load generator's transport: pre-built request bytes over keep-alive connections.

Why not httpx (the previous client) or aiohttp: on a 2-core machine every CPU cycle the
client spends is taken from the server it measures. httpx builds headers, a request
object and a response object per call in Python (about 0.5 to 1 CPU-ms per request);
here a request is one ``transport.write`` of bytes built before the run, and the answer
is parsed by ``httptools`` (llhttp, the C parser uvicorn itself uses), so a request
costs the client a few tens of microseconds. gRPC goes through ``grpc.aio`` with its
serialiser switched off: the ``ModelInferRequest`` is serialised once, up front, and the
answer is left as bytes (a success is the status, which gRPC reports in the trailers).

One :class:`HttpConnection` carries one request at a time (HTTP/1.1 without
pipelining); :class:`HttpPool` hands each closed-loop worker an idle connection, so at
steady state concurrency ``c`` holds exactly ``c`` keep-alive connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

import grpc
import httptools

#: The Open Inference Protocol's unary inference call (as Triton and our server name it).
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class TransportError(Exception):
    """The connection closed, timed out or answered something that is not HTTP/1.1."""


class StaleConnection(TransportError):
    """A kept-alive connection closed before any byte of the next answer: the server
    dropped it while idle (uvicorn does after 5 s), so the request can go on a new one."""


def http_request(
    authority: str, path: str, body: bytes, headers: Mapping[str, str] | None = None
) -> bytes:
    """A complete ``POST`` request (head and body) as the bytes to write on the socket."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {authority}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: write a request, await ``(status, body)``.

    The parser calls back into this object (``on_body``, ``on_message_complete``); a
    response that says ``Connection: close`` closes the connection after it is answered,
    and the pool then opens a new one.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._receiving = False
        self.answered = 0
        self.open = False
        self.lost = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, do not check.
        self._transport = cast("asyncio.Transport", transport)
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._receiving = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"unparsable response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.lost.done():
            self.lost.set_result(None)
        kind = StaleConnection if self.answered and not self._receiving else TransportError
        self._fail(kind(f"connection closed: {exc or 'by the server'}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = False
        self.answered += 1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), b"".join(self._body)))
        if not self._parser.should_keep_alive():
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self._transport is None or not self.open:
            raise StaleConnection("connection is not open")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()


class HttpPool:
    """Keep-alive connections to one ``host:port``, one per request in flight."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.authority = f"{host}:{port}"
        self._idle: list[HttpConnection] = []
        self._all: set[HttpConnection] = set()

    async def _connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(HttpConnection, self.host, self.port)
        self._all.add(connection)
        return connection

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Status and body of one request; raises :class:`TransportError` (or
        ``TimeoutError`` after ``timeout_s``), and then the connection is dropped. A
        kept-alive connection the server closed while idle is replaced, not an error."""
        async with asyncio.timeout(self.timeout_s):
            while True:
                connection = self._idle.pop() if self._idle else None
                reused = connection is not None
                try:
                    if connection is None:
                        connection = await self._connect()
                    answer = await connection.request(data)
                except StaleConnection:
                    assert connection is not None
                    connection.close()
                    if reused:
                        continue
                    raise
                except BaseException:
                    if connection is not None:
                        connection.close()  # the pool's aclose still waits for it to go
                    raise
                if connection.open:
                    self._idle.append(connection)
                return answer

    async def aclose(self) -> None:
        """Closes every connection and waits until the loop has let go of them."""
        connections = [*self._all]
        self._all.clear()
        self._idle.clear()
        for connection in connections:
            connection.close()
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=self.timeout_s)


def grpc_channel(host: str, port: int) -> grpc.aio.Channel:
    """One HTTP/2 channel for every worker (as one tritonclient client has), with room
    for large messages (12 MP photos)."""
    options = [
        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
    ]
    return grpc.aio.insecure_channel(f"{host}:{port}", options)


def raw_model_infer(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """``ModelInfer`` taking a serialised request and returning the serialised answer:
    no protobuf work on the client per call."""
    return channel.unary_unary(MODEL_INFER_METHOD)
