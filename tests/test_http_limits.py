"""Connections and request heads bounded in the HTTP protocol (service/http_limits.py).

The first tests pin the uvicorn internals the protocol subclasses (it extends a private
class): they fail when an upgrade renames or reshapes what it overrides. The others run
against a real server.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import select
import socket
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from benchmarks.harness import REPO_ROOT, ServerProcess
from service.http_limits import IDLE_GRACE_S, BoundedHttp, bounded_http_protocol

HEAD_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 1
MAX_CONNECTIONS = 8

#: Every method BoundedHttp overrides, with the parameters it passes on.
OVERRIDDEN = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_response_complete": ["self"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "send_400_response": ["self", "msg"],
}


def test_uvicorn_is_pinned_below_its_next_minor_version() -> None:
    # http_limits subclasses uvicorn's private HttpToolsProtocol: a minor release may
    # change it, so the pin admits only the minor versions this test has seen.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [Requirement(r).specifier for r in project["dependencies"] if r.startswith("uvicorn")]
    installed = Version(uvicorn.__version__)
    assert installed in spec, (installed, spec)
    uppers = [Version(s.version) for s in spec if s.operator == "<"]
    assert uppers == [Version(f"{installed.major}.{installed.minor + 1}")], spec


def test_uvicorn_internals_the_protocol_overrides_keep_their_shape() -> None:
    for name, parameters in OVERRIDDEN.items():
        assert callable(getattr(HttpToolsProtocol, name, None)), name
        assert list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters) == parameters


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.eof = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def test_uvicorn_lifecycle_the_protocol_relies_on() -> None:
    """connections/tasks sets, the ASGI task started from on_headers_complete, the
    cycle complete before on_response_complete, parse errors through send_400_response."""
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(hello, log_config=None)
        state = ServerState()
        protocol_class = bounded_http_protocol(
            max_header_bytes=4096, head_timeout_s=5, max_connections=2
        )
        first, transport = protocol_class(config, state, {}, _loop=loop), FakeTransport()
        first.connection_made(transport)
        assert state.connections == {first} and first in first.book.heads
        first.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert len(state.tasks) == 1 and first not in first.book.heads
        loop.run_until_complete(asyncio.gather(*state.tasks))
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert first in first.book.idle  # idle keep-alive: may give way

        bad, bad_transport = protocol_class(config, state, {}, _loop=loop), FakeTransport()
        bad.connection_made(bad_transport)
        bad.data_received(b"\x00\x01 not http\r\n\r\n")
        assert bad_transport.written.startswith(b"HTTP/1.1 400")
        assert json.loads(bad_transport.written.partition(b"\r\n\r\n")[2])["error"]["code"]
        assert bad_transport.eof and bad not in state.connections
    finally:
        loop.close()


def test_the_protocol_class_carries_its_servers_bounds() -> None:
    one = bounded_http_protocol(max_header_bytes=1024, head_timeout_s=2, max_connections=3)
    two = bounded_http_protocol(max_header_bytes=2048, head_timeout_s=4, max_connections=5)
    assert issubclass(one, BoundedHttp) and one.book is not two.book
    assert (one.max_header_bytes, one.head_timeout_s, one.max_connections) == (1024, 2, 3)


# --- against a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def bounded(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("bounded") / "server.log"
    with ServerProcess(
        model_repository,
        log,
        max_header_bytes=4096,
        head_timeout_s=HEAD_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_S,
        max_connections=MAX_CONNECTIONS,
        warmup="false",
    ) as server:
        yield server
        assert "Traceback" not in server.logs()


def send(port: int, head: bytes, parts: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for part in parts:
                sock.sendall(part)
            return sock.recv(65536)
        except OSError:
            return b""  # reset while still sending: the server closed on us


def get(extra: bytes) -> bytes:
    return b"GET /health/live HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def answer(raw: bytes) -> tuple[int, dict[str, Any], bytes]:
    """(status, error object, raw head) of one HTTP answer read off a socket."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"], head


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_heads_over_the_bound_get_431_and_the_rest_pass(bounded: ServerProcess) -> None:
    small = send(bounded.port, get(b"X-Filler: " + b"a" * 2000 + b"\r\n"))
    assert small.startswith(b"HTTP/1.1 200")
    # One read holding a whole head over the bound: measured exactly, refused.
    big = send(bounded.port, get(b"X-Filler: " + b"a" * 5000 + b"\r\n"))
    assert big.startswith(b"HTTP/1.1 431")
    assert b'"code":"request_header_fields_too_large"' in big
    # A head that never ends, a read at a time: cut off instead of accumulated.
    endless = send(bounded.port, b"GET / HTTP/1.1\r\n", [b"X-A: " + b"b" * 3000 + b"\r\n"] * 50)
    assert endless == b"" or endless.startswith(b"HTTP/1.1 431")
    assert send(bounded.port, get(b"")).startswith(b"HTTP/1.1 200")  # the server is unharmed


@pytest.mark.parametrize("sent", [b"", b"GET /health/live HTTP/1.1\r\nHost: t\r\n"])
def test_a_head_not_complete_in_time_gets_408_and_the_connection_closes(
    bounded: ServerProcess, sent: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        raw = read_all(sock)  # ends when the server closes
        waited_s = time.monotonic() - started
    status, error, _ = answer(raw)
    assert (status, error["code"], error["head_timeout_s"]) == (408, "request_timeout", 1.5)
    assert HEAD_TIMEOUT_S - 0.1 <= waited_s <= HEAD_TIMEOUT_S + 2, waited_s


def test_a_head_trickled_byte_by_byte_is_cut_at_the_head_timeout(bounded: ServerProcess) -> None:
    head = get(b"")
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=10) as sock:
        started = time.monotonic()
        try:
            for byte in head[:-1]:  # never completes: one byte every 0.1 s
                sock.send(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed on us
        raw = read_all(sock)
        assert time.monotonic() - started <= HEAD_TIMEOUT_S + 2
    assert answer(raw)[0] == 408


def test_an_idle_keep_alive_connection_is_closed_even_if_it_sends_blank_lines(
    bounded: ServerProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=10) as quiet:
        quiet.sendall(get(b""))
        started = time.monotonic()
        assert read_all(quiet).startswith(b"HTTP/1.1 200")  # then closed when idle
        assert time.monotonic() - started <= KEEP_ALIVE_S + 1.5
    # uvicorn's keep-alive timer is cancelled by any bytes; the head timer takes over.
    with socket.create_connection(("127.0.0.1", bounded.port), timeout=10) as chatty:
        chatty.sendall(get(b""))
        assert chatty.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        try:
            for _ in range(40):
                chatty.sendall(b"\r\n")
                time.sleep(0.25)
        except OSError:
            pass
        assert b"408 Request Timeout" in read_all(chatty)
        assert time.monotonic() - started <= HEAD_TIMEOUT_S + 2


def test_at_the_limit_a_newcomer_takes_the_place_of_one_still_waiting_for_its_head(
    bounded: ServerProcess,
) -> None:
    held = [socket.create_connection(("127.0.0.1", bounded.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # all accepted
        assert httpx.get(f"{bounded.url}/health/live", timeout=5).status_code == 200
        readable, _, _ = select.select(held, [], [], HEAD_TIMEOUT_S / 2)
        assert readable  # answered at once, not at the head timeout
        status, error, head = answer(read_all(readable[0]))
        assert (status, error["code"], error["max_connections"]) == (503, "overloaded", 8)
        assert b"retry-after: 1" in head.lower()
    finally:
        for sock in held:
            sock.close()


def test_with_no_place_to_give_a_newcomer_gets_json_503_with_retry_after_at_once(
    bounded: ServerProcess,
) -> None:
    # Clients between two requests (idle under IDLE_GRACE_S) keep their places.
    held = [socket.create_connection(("127.0.0.1", bounded.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:
            sock.sendall(get(b""))
            reply = b""
            while not reply.endswith(b"}"):  # head and body may come apart
                reply += sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", bounded.port), timeout=5) as late:
            started = time.monotonic()
            status, error, head = answer(read_all(late))
            assert time.monotonic() - started < IDLE_GRACE_S
        assert (status, error["code"]) == (503, "overloaded")
        assert b"retry-after: 1" in head.lower()
        time.sleep(IDLE_GRACE_S + 0.1)  # now an idle one gives way, closed silently
        assert httpx.get(f"{bounded.url}/health/live", timeout=5).status_code == 200
        closed = [sock for sock in held if select.select([sock], [], [], 0)[0]]
        assert closed and read_all(closed[0]) == b""
    finally:
        for sock in held:
            sock.close()
