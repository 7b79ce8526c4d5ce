"""Request heads bounded in the HTTP protocol (service/http_limits.py), on a real server."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import ServerProcess


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


def test_heads_over_the_bound_get_431_and_the_rest_pass(
    start_server: Callable[..., ServerProcess], model_repository: Path
) -> None:
    srv = start_server(model_repository, max_header_bytes=4096)
    small = send(srv.port, get(b"X-Filler: " + b"a" * 2000 + b"\r\n"))
    assert small.startswith(b"HTTP/1.1 200")
    # One read holding a whole head over the bound: measured exactly, refused.
    big = send(srv.port, get(b"X-Filler: " + b"a" * 5000 + b"\r\n"))
    assert big.startswith(b"HTTP/1.1 431")
    assert b'"code":"request_header_fields_too_large"' in big
    # A head that never ends, a read at a time: cut off instead of accumulated.
    endless = send(srv.port, b"GET / HTTP/1.1\r\n", [b"X-A: " + b"b" * 3000 + b"\r\n"] * 50)
    assert endless == b"" or endless.startswith(b"HTTP/1.1 431")
    assert send(srv.port, get(b"")).startswith(b"HTTP/1.1 200")  # the server is unharmed
