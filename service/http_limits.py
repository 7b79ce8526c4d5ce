"""Bounds below ASGI: what a connection may hold, and for how long, before a request starts.

A request's head (request line and headers) is parsed before any ASGI code runs, so
its bounds live in the protocol. :class:`BoundedHttp` extends uvicorn's httptools
protocol with four of them, each answered with the service's JSON error body:

* **Head size**: past ``max_header_bytes``, 431 and the connection is closed (httptools
  itself accepts heads of any size: a 20 MB header was held, measured).
* **Head time**: a head must be complete within ``head_timeout_s`` of the connection
  opening, or of the first byte of the next request on a keep-alive connection; else
  408 and the connection is closed. uvicorn has no such timer: a client sending a byte
  now and then, or nothing at all, held its connection forever (measured).
* **Idle keep-alive**: closed after ``keep_alive_timeout_s`` by uvicorn's own
  ``timeout_keep_alive``, which is enough except that any bytes (even a bare CRLF)
  cancel it without re-arming it; here those bytes start the head timer instead.
* **Connections**: at most ``max_connections`` open at once, counted the moment they are
  accepted (silent ones and partial heads included). uvicorn's ``limit_concurrency`` is
  not enough: it is checked only once a head is complete, so connections past it were
  accepted and held their heads (1500 of them: +110 MiB), and it answers plain text
  without Retry-After. Here, at the limit, a newcomer takes the place of the connection
  that has waited longest for its head (answered 503 + Retry-After), else of the one idle
  longest on keep-alive, if idle for :data:`IDLE_GRACE_S` (closed silently, as its
  timeout would; nginx drains idle keep-alive connections the same way). With none to
  give way (every place holds a request in progress or a client between two requests),
  the newcomer gets 503 + Retry-After at once. Why the newest wins: until its head is
  complete, a slow client cannot be told from one holding places on purpose, but a valid
  client completes its head within a round trip of connecting and is then never cut, so
  holding connections without sending requests keeps nobody out, however fast the
  holder reconnects (an age threshold instead lets a fast reconnector keep every place
  younger than it, measured: valid clients got 8 503s in 9).

A refused connection is answered, then closed gracefully: its write side is shut and
whatever it still sends is read and dropped, for at most :data:`LINGER_S` (closing with
unread input would reset the connection, and the client could lose the answer). At most
:data:`MAX_LINGERING` linger at once; past that they are closed at once. A lingering
connection holds no request data.

Not here: a body's minimum rate, which the pipeline's read stage enforces under the
request's deadline (408 for a body still arriving).

Memory: at most ``max_connections`` open connections each hold at most
``max_header_bytes`` of head plus :data:`CONNECTION_STATE_BYTES`, and at most
:data:`MAX_LINGERING` more linger with that state only (see docs/LIMITS.md, memory budget).
"""

from __future__ import annotations

import asyncio
import http
import time
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.errors import service_error_response
from service.errors import BadRequest, HeadersTooLarge, Overloaded, RequestTimeout, ServiceError

#: Longest a refused connection is read (and its input dropped) before it is closed.
LINGER_S = 1.0
#: A keep-alive connection idle for less than this keeps its place at the limit: its
#: client is between two requests (a probe every second, a pooled client).
IDLE_GRACE_S = 1.0
#: Most refused connections lingering at once; past it, they are closed at once.
MAX_LINGERING = 1024
#: What a connection holds besides its head: protocol, transport and parser state
#: (measured: 6.4 KiB each, 1000 silent connections; rounded up). For the memory formula.
CONNECTION_STATE_BYTES = 8 * 1024


class ConnectionBook:
    """One server's connections that may give way, and those lingering after a refusal.

    ``heads`` and ``idle`` map the connections waiting for a head and those idle on
    keep-alive to when they began; a dict keeps insertion order, so each one's first
    entry is the one waiting longest.
    """

    def __init__(self) -> None:
        self.heads: dict[BoundedHttp, float] = {}
        self.idle: dict[BoundedHttp, float] = {}
        self.lingering: set[BoundedHttp] = set()

    def waiting_for_head(self, connection: BoundedHttp) -> None:
        self.forget(connection)
        self.heads[connection] = time.monotonic()

    def waiting_idle(self, connection: BoundedHttp) -> None:
        self.forget(connection)
        self.idle[connection] = time.monotonic()

    def forget(self, connection: BoundedHttp) -> None:
        self.heads.pop(connection, None)
        self.idle.pop(connection, None)

    def next_to_give_way(self) -> BoundedHttp | None:
        for connection in self.heads:
            return connection
        for connection, since in self.idle.items():
            return connection if time.monotonic() - since >= IDLE_GRACE_S else None
        return None


class BoundedHttp(HttpToolsProtocol):
    """httptools' protocol with the bounds of the module docstring.

    Built per server by :func:`bounded_http_protocol`, which sets the class attributes.
    """

    max_header_bytes: ClassVar[int] = 64 * 1024
    head_timeout_s: ClassVar[float] = 5.0
    max_connections: ClassVar[int] = 1024
    book: ClassVar[ConnectionBook] = ConnectionBook()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._idle = False  # after a response, no byte of the next request yet
        self._answered = False  # refused: input is dropped until the connection closes

    # --- connection lifecycle ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        full = self._full()  # counted before uvicorn adds this connection
        super().connection_made(transport)
        if full and not self._make_room():
            self._refuse(
                Overloaded(
                    f"the server has its most open connections ({self.max_connections}); "
                    "retry shortly",
                    max_connections=self.max_connections,
                )
            )
            return
        self.book.waiting_for_head(self)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self.book.lingering.discard(self)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        if self._idle:
            # uvicorn has just cancelled its keep-alive timer for these bytes: from here
            # the head timer bounds the connection (a bare CRLF no longer keeps it open).
            self._idle = False
            self.book.waiting_for_head(self)
            self._arm_head_timer()
        super().data_received(data)
        if not self._in_head or self._answered or self.transport.is_closing():
            return
        # Counted after parsing, whole reads at a time: the head may hold at most one
        # read (256 KiB) more than the bound before the connection is closed.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._refuse_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
            return  # closed, or a pipelined request started
        self._idle = True  # uvicorn's keep-alive timer now bounds the idle time
        self.book.waiting_idle(self)

    # --- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._answered:
            return
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_url(self, url: bytes) -> None:
        if not self._answered:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._answered:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._answered:
            return
        self._in_head = False
        # A head that arrived in one read is only known whole here: measure it exactly,
        # before uvicorn starts the request.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refuse_head()
            return
        if len(self.tasks) >= self.max_connections:
            # Requests whose clients left are still finishing: no room for another.
            self._refuse(
                Overloaded(
                    f"the server has its most requests in progress ({self.max_connections}); "
                    "retry shortly",
                    max_connections=self.max_connections,
                )
            )
            return
        self._stop_waiting()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._answered:
            self._refuse(BadRequest(f"the request is not valid HTTP/1.1: {msg}"))

    # --- bounds --------------------------------------------------------------------
    def _full(self) -> bool:
        limit = self.max_connections
        return len(self.connections) >= limit or len(self.tasks) >= limit

    def _make_room(self) -> bool:
        """Close the connection that gives way to a newcomer (module docstring), if any."""
        if len(self.tasks) >= self.max_connections:
            return False  # requests in progress are never cut; closing one frees nothing
        victim = self.book.next_to_give_way()
        if victim is None:
            return False
        if victim._idle:
            victim._stop_waiting()
            victim.transport.close()
        else:
            victim._refuse(
                Overloaded(
                    "the server has its most open connections and this one had not sent a "
                    "complete request line and headers; retry shortly",
                    max_connections=self.max_connections,
                )
            )
        return True

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_waiting(self) -> None:
        self.book.forget(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._answered or self.transport.is_closing():
            return
        self._refuse(
            RequestTimeout(
                f"the request line and headers did not arrive within {self.head_timeout_s:g} s",
                head_timeout_s=self.head_timeout_s,
            )
        )

    def _refuse_head(self) -> None:
        self._refuse(
            HeadersTooLarge(
                f"the request line and headers passed {self.max_header_bytes} bytes, "
                "the most accepted",
                max_header_bytes=self.max_header_bytes,
            )
        )

    def _refuse(self, error: ServiceError) -> None:
        """Answer ``error`` as the service's JSON, then close gracefully (module docstring)."""
        self._answered, self._in_head = True, False
        self._stop_waiting()
        self.connections.discard(self)  # a refused connection no longer counts
        # Let go of the head read so far (uvicorn's copy and the parser's partial header):
        # a lingering connection holds protocol state only (measured: 1438 refused 60 KiB
        # heads kept +37 MiB until this).
        if self.headers:  # None before the first byte; also the scope's list
            self.headers.clear()
        self.url = b""
        self.parser = httptools.HttpRequestParser(self)
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is being sent: no room for another
            return
        response = service_error_response(error)
        status = http.HTTPStatus(error.status)
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")]
        for name, value in response.raw_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + response.body)
        if len(self.book.lingering) >= MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.book.lingering.add(self)
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)


def bounded_http_protocol(
    *, max_header_bytes: int, head_timeout_s: float, max_connections: int
) -> type[BoundedHttp]:
    """The protocol class for uvicorn's ``http=``, with this server's bounds and book."""
    return type(
        "BoundedHttp",
        (BoundedHttp,),
        {
            "max_header_bytes": max_header_bytes,
            "head_timeout_s": head_timeout_s,
            "max_connections": max_connections,
            "book": ConnectionBook(),
        },
    )
