"""The load generator's transport against a tiny local HTTP server: keep-alive, chunked
answers, ``Connection: close``, a server that hangs up, and its own CPU per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from benchmarks import http, wire

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body (Content-Length framing), or None once the client left."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes every body back on the same connection, alternating length and chunked."""
    count = 0
    while (body := await _read_request(reader)) is not None:
        count += 1
        if count % 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        else:
            half = len(body) // 2
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]) if c
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
            )
        await writer.drain()
    writer.close()


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback server; yields its port and a list that counts accepted connections."""
    accepted: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], accepted


def test_one_connection_carries_every_request_of_a_worker() -> None:
    async def main() -> None:
        async with _server(_echo) as (port, accepted):
            pool = wire.HttpPool("127.0.0.1", port, timeout_s=5)
            try:
                for i in range(6):  # lengths and chunked answers, alternately
                    body = b"x" * (1000 * i + 1)
                    data = wire.http_request(pool.authority, "/echo", body)
                    assert await pool.request(data) == (200, body)
            finally:
                await pool.aclose()
            assert len(accepted) == 1

    asyncio.run(main())


def test_connection_close_answer_opens_a_new_connection_next_time() -> None:
    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _server(close_after_one) as (port, accepted):
            pool = wire.HttpPool("127.0.0.1", port, timeout_s=5)
            data = wire.http_request(pool.authority, "/", b"a")
            try:
                assert await pool.request(data) == (503, b"")
                assert await pool.request(data) == (503, b"")
            finally:
                await pool.aclose()
            assert len(accepted) == 2

    asyncio.run(main())


def test_keep_alive_connection_the_server_dropped_while_idle_is_replaced() -> None:
    """uvicorn closes a keep-alive connection idle for 5 s: not the request's fault."""

    async def answer_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no Connection: close header: the client learns it on its next use

    async def main() -> None:
        async with _server(answer_then_drop) as (port, accepted):
            pool = wire.HttpPool("127.0.0.1", port, timeout_s=5)
            data = wire.http_request(pool.authority, "/", b"a")
            try:
                assert await pool.request(data) == (200, b"ok")
                await asyncio.sleep(0.1)  # the close arrives while the connection is idle
                assert await pool.request(data) == (200, b"ok")
            finally:
                await pool.aclose()
            assert len(accepted) == 2

    asyncio.run(main())


def test_server_hanging_up_mid_request_is_a_transport_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def main() -> None:
        async with _server(hang_up) as (port, _):
            pool = wire.HttpPool("127.0.0.1", port, timeout_s=5)
            try:
                with pytest.raises(wire.TransportError):
                    await pool.request(wire.http_request(pool.authority, "/", b"a"))
                # The sender turns it into an error outcome, never an exception.
                send = http.http_sender(pool, "/", [http.Body(b"a", "image/jpeg")])
                assert await send(0) == http.Outcome("0")
            finally:
                await pool.aclose()

    asyncio.run(main())


def test_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        async with _server(silent) as (port, _):
            pool = wire.HttpPool("127.0.0.1", port, timeout_s=0.2)
            try:
                with pytest.raises(TimeoutError):
                    await pool.request(wire.http_request(pool.authority, "/", b"a"))
            finally:
                await pool.aclose()

    asyncio.run(main())


def test_request_bytes_are_a_complete_http_request() -> None:
    data = wire.http_request("h:1", "/p?q=1", b"body", {"Content-Type": "image/jpeg"})
    assert data == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 4\r\n"
        b"Content-Type: image/jpeg\r\n\r\nbody"
    )


def test_client_cpu_per_request_is_small() -> None:
    """The point of the transport: well under a millisecond of client CPU per request
    (64 KB bodies, 8 in flight). Generous bound: the machine is shared."""

    async def main() -> float:
        async with _server(_echo) as (port, _):
            pool = wire.HttpPool("127.0.0.1", port, timeout_s=5)
            send = http.http_sender(pool, "/", [http.Body(b"j" * 65536, "image/jpeg")])
            count = 400

            async def worker(start: int) -> None:
                for i in range(start, count, 8):
                    assert (await send(i)).error is None

            try:
                await worker(0)  # connect and warm up outside the measurement
                cpu0 = time.process_time()
                await asyncio.gather(*(worker(i) for i in range(8)))
                return (time.process_time() - cpu0) / count * 1000
            finally:
                await pool.aclose()

    # The echo server runs in this process too, so this bounds client + server.
    cpu_ms = asyncio.run(main())
    assert cpu_ms < 1.0, f"{cpu_ms:.3f} CPU-ms per request"
