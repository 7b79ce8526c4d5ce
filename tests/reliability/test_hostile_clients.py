"""Hostile clients against the real server, while valid requests keep flowing.

Each attack is what a client with no API key but a network path could send: images
that are tiny on the wire and huge once decoded, many maximal bodies at once, bodies
that trickle in, clients that hang up mid-body or mid-queue, odd headers. The server
runs with small budgets so the memory bound is tight; the test asserts

* its peak RSS (VmHWM, reset after warm-up) stays within the documented formula
  ``idle + body budget + decode budget + batch tensors + slack``;
* valid requests get 200, or a fast 503 with Retry-After, never anything else;
* nothing gets another 5xx, and the log holds no traceback;
* every budget is back to zero afterwards.

Every loop is bounded in count and time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness import ServerProcess
from service.preprocess import worst_cost_bytes
from tests.reliability import images

API_KEY = "hostile-suite-key"
MiB = 2**20
BODY_BUDGET = 16 * MiB
MAX_BODY = 8 * MiB
#: Room for one maximal decode at a time (the smallest budget the server accepts).
DECODE_BUDGET = worst_cost_bytes(40_000_000)
#: ResNet-18 at batch 32: the stacked input and ONNX Runtime's activations for it.
BATCH_TENSORS = 32 * 3 * 224 * 224 * 4 * 4
#: The interpreter, allocator arenas and thread stacks growing under load.
SLACK = 96 * MiB
GOOD = images.encode(images.photo_like(), "JPEG")


@pytest.fixture(scope="module")
def hostile() -> dict[str, bytes]:
    return images.hostile_images()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def reset_peak(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def post(url: str, **kwargs: Any) -> httpx.Response:
    headers = {"X-API-Key": API_KEY, **kwargs.pop("headers", {})}
    return httpx.post(f"{url}/classify", headers=headers, timeout=60, **kwargs)


def raw_request(port: int, head: bytes, body_parts: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send ``head`` then each body part (pausing between), then read what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        for part in body_parts:
            if pause_s:
                time.sleep(pause_s)
            try:
                sock.sendall(part)
            except OSError:
                break  # the server already answered and closed
        sock.settimeout(20)
        try:
            return sock.recv(65536)
        except OSError:
            return b""


def hang_up(port: int, head: bytes, body: bytes) -> None:
    """Send ``head`` and ``body``, then close without reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body)


def head(length: int | None, *, extra: str = "", content_type: str = "image/png") -> bytes:
    lines = [
        "POST /classify HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-API-Key: {API_KEY}",
        f"Content-Type: {content_type}",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def test_hostile_clients_cannot_exhaust_memory_or_harm_valid_requests(
    start_server: Callable[..., ServerProcess], model_repository: Path, hostile: dict[str, bytes]
) -> None:
    srv = start_server(
        model_repository,
        api_key=API_KEY,
        decode_threads=2,
        max_body_bytes=MAX_BODY,
        max_body_bytes_in_flight=BODY_BUDGET,
        max_decode_bytes_in_flight=DECODE_BUDGET,
        request_timeout_s=20,
    )
    pid = srv.process.pid
    assert post(srv.url, files=[("file", ("good.jpg", GOOD))]).status_code == 200
    idle = current_rss(pid)
    reset_peak(pid)
    bound = idle + BODY_BUDGET + DECODE_BUDGET + BATCH_TENSORS + SLACK

    stop = threading.Event()
    valid: list[httpx.Response] = []

    def valid_traffic() -> None:
        until = time.monotonic() + 120
        for _ in range(2000):
            if stop.is_set() or time.monotonic() > until:
                return
            valid.append(post(srv.url, files=[("file", ("good.jpg", GOOD))]))

    attacks: dict[str, list[int]] = {}
    lock = threading.Lock()

    def record(name: str, status: int) -> None:
        with lock:
            attacks.setdefault(name, []).append(status)

    def big_images() -> None:
        for name, data in hostile.items():
            files = [("file", (name, data))] * 2
            record(name, post(srv.url, files=files).status_code)

    def maximal_bodies() -> None:
        junk = b"\x89PNG" + b"\0" * (MAX_BODY - 4)
        with ThreadPoolExecutor(6) as pool:
            for response in pool.map(
                lambda _: post(srv.url, content=junk, headers={"Content-Type": "image/png"}),
                range(6),
            ):
                record("maximal body", response.status_code)
                if response.status_code == 503:
                    assert response.headers["Retry-After"]

    def slow_upload() -> None:
        # 1 s deadline, a 200 KB body trickling at 1 KB per 0.2 s: cut off with 408.
        answer = raw_request(
            srv.port,
            head(200_000, extra="X-Request-Timeout-Ms: 1000\r\n"),
            [b"\0" * 1000] * 20,
            pause_s=0.2,
        )
        record("slow upload", int(answer.split()[1]) if answer else 0)

    def hang_ups() -> None:
        data = hostile["photo-40mp.jpg"]
        for _ in range(4):
            hang_up(srv.port, head(len(data) * 4), data)  # mid-body
            hang_up(srv.port, head(len(data), content_type="image/jpeg"), data)  # mid-queue
        record("hang-ups", 0)

    def odd_headers() -> None:
        odd = head(len(GOOD), content_type="image/jpeg").replace(
            f"X-API-Key: {API_KEY}".encode(), b"X-API-Key: \xff\xfe"
        )
        answer = raw_request(srv.port, odd, [GOOD])
        record("non-ASCII API key", int(answer.split()[1]))
        big = head(len(GOOD), extra="X-Filler: " + "a" * 100_000 + "\r\n")
        answer = raw_request(srv.port, big, [GOOD])
        record("oversized header", int(answer.split()[1]) if answer else 0)
        # Headers that never end, one 64 KiB read at a time: cut off, not accumulated.
        endless = [b"X-More: " + b"b" * 65_000 + b"\r\n" for _ in range(40)]
        answer = raw_request(srv.port, head(len(GOOD))[:-2], endless)
        record("endless header", int(answer.split()[1]) if answer else 0)

    with ThreadPoolExecutor(6) as pool:
        flowing = pool.submit(valid_traffic)
        jobs = [
            pool.submit(job)
            for job in (big_images, maximal_bodies, slow_upload, hang_ups, odd_headers)
        ]
        for job in jobs:
            job.result(timeout=240)
        stop.set()
        flowing.result(timeout=120)

    peak = peak_rss(pid)
    print(f"idle {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB")
    print({name: dict(Counter(codes)) for name, codes in attacks.items()})
    assert peak <= bound, f"peak RSS {peak / MiB:.0f} MiB over the bound {bound / MiB:.0f} MiB"

    for name in hostile:  # each was classified or refused for memory, never crashed
        assert set(attacks[name]) <= {200, 503}, (name, attacks[name])
    assert set(attacks["maximal body"]) <= {415, 503}, attacks["maximal body"]
    assert attacks["slow upload"] == [408]
    assert attacks["non-ASCII API key"] == [401]
    assert attacks["oversized header"] == [431]
    assert attacks["endless header"] in ([431], [0])  # 0: reset while still sending

    codes = Counter(r.status_code for r in valid)
    assert codes[200] > 0, codes
    assert set(codes) <= {200, 503}, codes
    assert all(r.headers.get("Retry-After") for r in valid if r.status_code == 503)

    deadline = time.monotonic() + 10
    while srv.metric("resnet_serve_in_flight_requests") and time.monotonic() < deadline:
        time.sleep(0.05)  # hung-up requests finish cancelling
    assert srv.metric("resnet_serve_body_in_flight_bytes") == 0
    assert srv.metric("resnet_serve_decode_in_flight_bytes") == 0
    assert srv.metric("resnet_serve_in_flight_requests") == 0
    assert srv.metric("resnet_serve_requests_total", code="500") == 0
    log = srv.logs()
    assert "Traceback" not in log, log[-4000:]
    assert srv.stop() == 0
