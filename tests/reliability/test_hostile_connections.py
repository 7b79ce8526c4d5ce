"""Hostile connections against the real server, while valid clients keep coming.

Each attack is what a client with a network path and no request to make could do to the
HTTP transport: trickle a request head, connect and say nothing, idle on keep-alive (or
keep it open with blank lines), or open connections far past ``max_connections``. Each
runs for :data:`ATTACK_S` beside valid ``/classify`` clients (a new connection per
request; they honour ``Retry-After``) and a liveness probe, and the test asserts:

* peak RSS (VmHWM, reset before the attack) within the documented formula: open
  connections x (``max_header_bytes`` + their state) + lingering refused connections x
  their state (see README, memory budget), plus slack for the valid traffic;
* ``/health/live`` answered within 1 s throughout, on one keep-alive connection opened
  before the attack: that measures the event loop. A probe on a new connection each time
  (as a kubelet's) also runs, and must get its answer (200, or 503 + Retry-After) within
  5 s: it competes with the attack for ``max_connections`` and queues behind a flood's
  connections in the kernel's accept queue, so its time is the flood's, not the loop's
  (measured: all 200; slowest 0.9-1.3 s during the 1500-connection flood, up to 0.55 s
  otherwise, on a shared 2-core machine);
* valid clients get 200 for at least half of their requests during the attack (503 +
  Retry-After otherwise) and all of them after it;
* the attack's connections get only 408, 431 or 503 (JSON), or are closed when idle;
  no 500, no traceback in the server log.

Bounded in count and time; loopback only.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from benchmarks.harness import ServerProcess, peak_rss_bytes, rss_bytes
from service.http_limits import CONNECTION_STATE_BYTES, MAX_LINGERING
from tests.reliability import images

MiB, KiB = 2**20, 2**10
MAX_CONNECTIONS = 64
MAX_HEADER_BYTES = 64 * KiB
HEAD_TIMEOUT_S = 3.0
KEEP_ALIVE_S = 2
ATTACK_S = 9.0
#: The valid clients' requests (decode, one small batch) and allocator noise.
SLACK = 16 * MiB
BOUND = (
    MAX_CONNECTIONS * (MAX_HEADER_BYTES + CONNECTION_STATE_BYTES)
    + MAX_LINGERING * CONNECTION_STATE_BYTES
    + SLACK
)
GOOD = images.encode(images.photo_like(320, 240), "JPEG")
HEAD = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def srv(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("hostile-connections") / "server.log"
    with ServerProcess(
        model_repository,
        log,
        max_connections=MAX_CONNECTIONS,
        max_header_bytes=MAX_HEADER_BYTES,
        head_timeout_s=HEAD_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_S,
    ) as server:
        yield server


@dataclass
class Attack:
    """``count`` connections open at once for ``duration_s``: each sends ``opening``, then
    ``drip`` every ``tick_s``. Connections the server closed are replaced by new ones at
    the next tick when ``reconnect`` (a hostile client comes back; at once instead, the
    same suite measured 2000 refusals a second and the same results for valid clients,
    at a CPU cost this shared machine should not pay each run). ``outcomes`` counts what
    each connection got."""

    port: int
    count: int
    opening: bytes
    drip: bytes = b""
    reconnect: bool = True
    tick_s: float = 0.5
    outcomes: Counter[str] = field(default_factory=Counter)
    idle_closed_after_s: list[float] = field(default_factory=list)

    def run(self, duration_s: float) -> None:
        answered_at: dict[socket.socket, float] = {}  # keep-alive: the 200 came back
        with selectors.DefaultSelector() as selector:  # epoll: select() stops at fd 1024
            try:
                for _ in range(self.count):
                    selector.register(self._open(), selectors.EVENT_READ)
                self._hold(selector, duration_s, answered_at)
            finally:
                for key in list(selector.get_map().values()):
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]

    def _hold(
        self,
        selector: selectors.BaseSelector,
        duration_s: float,
        answered_at: dict[socket.socket, float],
    ) -> None:
        until = time.monotonic() + duration_s
        next_tick, gone = time.monotonic() + self.tick_s, 0
        while time.monotonic() < until and (selector.get_map() or (self.reconnect and gone)):
            if not selector.get_map():
                time.sleep(0.05)  # every connection cut: wait for the tick to come back
            for key, _ in selector.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if self._read(sock, answered_at):
                    continue  # still open
                selector.unregister(sock)
                sock.close()
                gone += 1
            if time.monotonic() >= next_tick:
                next_tick += self.tick_s
                if self.reconnect:  # those cut come back, once a tick
                    for _ in range(gone):
                        selector.register(self._open(), selectors.EVENT_READ)
                    gone = 0
                for key in list(selector.get_map().values()) if self.drip else ():
                    with contextlib.suppress(OSError):  # closed on us: read next round
                        key.fileobj.send(self.drip)  # type: ignore[union-attr]

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        with contextlib.suppress(OSError):  # refused and closed while sending: read later
            sock.sendall(self.opening)
        return sock

    def _read(self, sock: socket.socket, answered_at: dict[socket.socket, float]) -> bool:
        """Record what ``sock`` received; True while it stays open."""
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            self.outcomes["reset"] += 1
            return False
        if not data:
            if sock in answered_at:
                self.idle_closed_after_s.append(time.monotonic() - answered_at.pop(sock))
                self.outcomes["closed when idle"] += 1
            else:
                self.outcomes["closed unanswered"] += 1
            return False
        # Status lines in this read; a 200's body may come in a later read of its own.
        statuses = [part.split(b" ", 1)[0].decode() for part in data.split(b"HTTP/1.1 ")[1:]]
        for status in statuses:
            if status == "200" and sock not in answered_at:
                answered_at[sock] = time.monotonic()  # keep-alive: now idle
                continue
            assert b"application/json" in data, data[:300]
            assert status != "503" or b"retry-after: 1" in data.lower(), data[:300]
            answered_at.pop(sock, None)
            self.outcomes[status] += 1
            return False
        if sock not in answered_at:
            self.outcomes["junk"] += 1
            return False
        return True


class Watch:
    """Valid clients and a liveness probe, beside an attack."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.valid: list[int | str] = []
        self.probe_s: list[float] = []
        self.probe_failures: list[str] = []
        self.fresh: list[int | str] = []  # the probe on a new connection each time
        self.fresh_s: list[float] = []
        self.probe = httpx.Client(timeout=1.0)  # opened now, before the attack
        assert self.probe.get(f"{url}/health/live").status_code == 200
        self.threads = [
            threading.Thread(target=self._valid_client),
            threading.Thread(target=self._live_probe),
            threading.Thread(target=self._fresh_probe),
        ]

    def __enter__(self) -> Watch:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.probe.close()

    def _valid_client(self) -> None:
        while not self.stop.is_set():
            pause_s = 0.1
            try:
                response = classify(self.url)
                retry_after = response.headers.get("Retry-After")
                if response.status_code == 503 and retry_after is None:
                    self.valid.append("503 without Retry-After")
                    pause_s = 1.0
                else:
                    self.valid.append(response.status_code)
                if response.status_code == 503 and retry_after is not None:
                    pause_s = min(float(retry_after), 1.0)
            except httpx.HTTPError as exc:
                self.valid.append(type(exc).__name__)
            self.stop.wait(pause_s)

    def _live_probe(self) -> None:
        while not self.stop.wait(0.25):
            started = time.monotonic()
            try:
                status = self.probe.get(f"{self.url}/health/live").status_code
                self.probe_s.append(time.monotonic() - started)
                if status != 200:
                    self.probe_failures.append(str(status))
            except httpx.HTTPError as exc:
                self.probe_failures.append(type(exc).__name__)

    def _fresh_probe(self) -> None:
        while not self.stop.wait(0.25):
            started = time.monotonic()
            try:
                response = httpx.get(f"{self.url}/health/live", timeout=5.0)
                retry_after = response.status_code != 503 or "Retry-After" in response.headers
                self.fresh.append(response.status_code if retry_after else "503 no Retry-After")
            except httpx.HTTPError as exc:
                self.fresh.append(type(exc).__name__)
            self.fresh_s.append(time.monotonic() - started)


def classify(url: str) -> httpx.Response:
    files = [("file", ("good.jpg", GOOD))]
    return httpx.post(f"{url}/classify", files=files, headers={"Connection": "close"}, timeout=30)


def under_attack(srv: ServerProcess, attack: Attack) -> Counter[str]:
    """Run ``attack`` beside valid clients; assert the module docstring's list; its outcomes."""
    pid = srv.process.pid
    assert classify(srv.url).status_code == 200
    idle = rss_bytes(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    with Watch(srv.url) as watch:
        started = time.monotonic()
        attack.run(ATTACK_S)
        attack_s = time.monotonic() - started
    peak = peak_rss_bytes(pid)
    valid = Counter(watch.valid)
    print(
        f"\n{attack.outcomes} | idle {idle / MiB:.0f} MiB, peak +{(peak - idle) / MiB:.1f} MiB "
        f"(bound +{BOUND / MiB:.1f}) | valid {dict(valid)} | /health/live slowest "
        f"{max(watch.probe_s, default=0) * 1000:.0f} ms of {len(watch.probe_s)}, on new "
        f"connections {dict(Counter(watch.fresh))} slowest {max(watch.fresh_s) * 1000:.0f} ms"
    )
    assert peak - idle <= BOUND, f"peak +{(peak - idle) / MiB:.1f} MiB over +{BOUND / MiB:.1f}"
    assert not watch.probe_failures and max(watch.probe_s) < 1.0, watch.probe_failures
    assert len(watch.probe_s) >= attack_s / 0.25 / 2, len(watch.probe_s)  # it kept probing
    assert set(watch.fresh) <= {200, 503}, watch.fresh
    assert set(valid) <= {200, 503}, valid
    assert valid[200] >= len(watch.valid) / 2, valid
    assert [classify(srv.url).status_code for _ in range(5)] == [200] * 5  # once it ended
    assert srv.metric("resnet_serve_requests_total", code="500") == 0
    log = srv.logs()
    assert "Traceback" not in log and "Exception in" not in log, log[-4000:]
    return attack.outcomes


def test_trickled_heads_get_408_and_cannot_hold_the_server(srv: ServerProcess) -> None:
    # A head a byte every half second, never complete; cut connections come straight back.
    attack = Attack(srv.port, MAX_CONNECTIONS, HEAD, drip=b"X")
    outcomes = under_attack(srv, attack)
    assert outcomes["408"] + outcomes["503"] > 0 and set(outcomes) <= {"408", "503"}, outcomes


def test_silent_connections_get_408_and_cannot_hold_the_server(srv: ServerProcess) -> None:
    attack = Attack(srv.port, MAX_CONNECTIONS, b"")
    outcomes = under_attack(srv, attack)
    assert outcomes["408"] + outcomes["503"] > 0 and set(outcomes) <= {"408", "503"}, outcomes


def test_idle_keep_alive_connections_are_closed_blank_lines_or_not(srv: ServerProcess) -> None:
    request = HEAD + b"\r\n"
    quiet = Attack(srv.port, MAX_CONNECTIONS // 2, request)
    chatty = Attack(srv.port, MAX_CONNECTIONS // 2, request, drip=b"\r\n")  # uvicorn's gap
    both = threading.Thread(target=chatty.run, args=(ATTACK_S,))
    both.start()
    try:
        outcomes = under_attack(srv, quiet)
    finally:
        both.join(timeout=ATTACK_S + 30)
    assert outcomes["closed when idle"] > 0 and set(outcomes) <= {"closed when idle", "503"}
    assert max(quiet.idle_closed_after_s) <= KEEP_ALIVE_S + 1.5, quiet.idle_closed_after_s
    print(f"blank lines: {chatty.outcomes}")
    assert chatty.outcomes["408"] > 0, chatty.outcomes
    assert set(chatty.outcomes) <= {"408", "503"}, chatty.outcomes


def test_a_flood_past_max_connections_is_refused_at_once_in_bounded_memory(
    srv: ServerProcess,
) -> None:
    # 1500 connections at once, each holding a head just under max_header_bytes.
    filler = b"X-Filler: " + b"f" * (MAX_HEADER_BYTES - len(HEAD) - 200) + b"\r\n"
    attack = Attack(srv.port, 1500, HEAD + filler, reconnect=False)
    outcomes = under_attack(srv, attack)
    assert outcomes["503"] >= 1500 - MAX_CONNECTIONS - 50, outcomes
    assert set(outcomes) <= {"408", "503", "reset"}, outcomes
