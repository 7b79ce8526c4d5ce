"""Closed-loop load: a fixed number of concurrent clients sending real JPEGs.

Why our own closed loop rather than Locust's library API: a closed loop with exactly
``concurrency`` requests in flight is what the engine limit is compared against; we
keep every latency (exact percentiles, not Locust's rounded buckets), bound each level
by request count *and* wall time, and avoid gevent's monkey-patching inside a process
that also times engines. Locust remains the tool for open-ended load on a deployed
server (loadtest/locustfile.py).

The client must cost (next to) nothing: on a 2-core machine every client cycle is taken
from the server. Every request is built once, up front, as the bytes to write
(:mod:`benchmarks.wire`: keep-alive sockets, a C response parser, gRPC without
per-call protobuf work), and the client's own CPU time over the window (this process,
all threads) is reported with every row, per request and as a share of the machine.

Each level is one continuous run: the first ``warmup_s`` fill the queue to its steady
state and are not counted; throughput counts completions inside the measured window;
requests still in flight when it closes are awaited (so the next level starts on an idle
server) but not counted. The loop knows no protocol (:func:`closed_loop` takes a
``send``) and no server (a :class:`Probe` reads its CPU time and batch sizes), so every
door of our server and of Triton is measured by the same loop.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

import httpx

from benchmarks import machine, wire
from benchmarks.harness import ServerProcess, metric_value, percentile


@dataclass(frozen=True)
class Body:
    content: bytes
    content_type: str


@dataclass(frozen=True)
class LoadBudget:
    max_requests: int = 2000
    max_time_s: float = 8.0
    warmup_s: float = 2.0
    timeout_s: float = 60.0


@dataclass
class LevelResult:
    variant: str
    batching: str
    concurrency: int
    images_per_request: int
    #: Every request of the level, warm-up included (errors are never excused).
    requests: int
    ok: int
    errors: int
    #: Requests started inside the measured window: the latency percentiles' sample.
    measured: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0
    requests_per_s: float = 0.0
    #: Goodput: images of successful (200 / OK) answers completed in the window, per s.
    images_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    mean_batch_size: float = 0.0
    #: Medians of the server's own ``timings`` (decode, queue, engine, route total): the
    #: rest of the client's latency is HTTP, parsing and the event loop.
    server_decode_ms: float = 0.0
    server_queue_ms: float = 0.0
    server_inference_ms: float = 0.0
    server_total_ms: float = 0.0
    #: The load generator's CPU time (this process, all threads) over the window, as a
    #: share of the machine's cores and per completed request.
    client_cpu_share: float = 0.0
    client_cpu_ms_per_request: float = 0.0
    server_cpu_share: float = 0.0
    #: Server CPU per image: what the service costs if it had the machine alone.
    server_cpu_ms_per_image: float = 0.0
    #: Server + client CPU per image.
    cpu_ms_per_image: float = 0.0


class Outcome(NamedTuple):
    """One request's end: ``error`` is None on success, else a short code (an HTTP status,
    ``"0"`` for a transport error or timeout, a gRPC status name); ``timings`` are the
    server's own when its answer carries them (``/classify`` does, V2 does not)."""

    error: str | None
    timings: dict[str, float] | None = None


#: Sends request number ``i`` (it picks the body) and says how it ended; never raises for
#: a failed request, so one error does not stop a worker.
Send = Callable[[int], Awaitable[Outcome]]


@dataclass(frozen=True)
class Snapshot:
    """The clocks and counters at one edge of the measured window."""

    at: float
    client_cpu_s: float
    server_cpu_s: float
    batch_sum: float
    batch_count: float


class Probe(Protocol):
    """What the loop reads from a server (ours, Triton): its CPU time so far (cheap,
    read at the very edge of the window) and its batch-size counters (a scrape, read
    outside the window so its cost is counted neither to the client nor the server)."""

    def server_cpu_s(self) -> float: ...

    async def batch_counters(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class _Done:
    started: float
    finished: float
    outcome: Outcome


@dataclass(frozen=True)
class Load:
    """Every request of a closed-loop run and the two snapshots around its window."""

    done: list[_Done]
    first: Snapshot
    last: Snapshot


def multipart_bodies(images: list[tuple[str, bytes]], per_request: int) -> list[Body]:
    """One body per starting image, each holding ``per_request`` consecutive images."""
    bodies = []
    for start in range(len(images)):
        boundary = uuid.uuid4().hex
        parts = []
        for offset in range(per_request):
            name, data = images[(start + offset) % len(images)]
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{name}"\r\nContent-Type: {kind}\r\n\r\n'
            )
            parts.append(head.encode() + data + b"\r\n")
        content = b"".join(parts) + f"--{boundary}--\r\n".encode()
        bodies.append(Body(content, f"multipart/form-data; boundary={boundary}"))
    return bodies


def raw_bodies(images: list[tuple[str, bytes]]) -> list[Body]:
    """One raw image body per image (``Content-Type: image/jpeg``, as ``curl
    --data-binary`` with a type sends it)."""
    return [
        Body(data, mimetypes.guess_type(name)[0] or "application/octet-stream")
        for name, data in images
    ]


class ServiceProbe:
    """Our server: CPU time from /proc, batch sizes from its /metrics histogram."""

    def __init__(self, server: ServerProcess, labels: dict[str, str]) -> None:
        self.server, self.labels = server, labels

    def server_cpu_s(self) -> float:
        return self.server.cpu_seconds()

    async def batch_counters(self) -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(f"{self.server.url}/metrics")).text
        return (
            metric_value(text, "resnet_serve_batch_size_sum", **self.labels),
            metric_value(text, "resnet_serve_batch_size_count", **self.labels),
        )


async def closed_loop(send: Send, concurrency: int, budget: LoadBudget, probe: Probe) -> Load:
    """``concurrency`` workers each sending the next request as soon as theirs ends.

    The front door is only in ``send`` and the server only in ``probe``: every door of
    every server is measured by the same loop, window and snapshots.
    """
    done: list[_Done] = []
    issued = 0
    window_start = time.perf_counter() + budget.warmup_s
    window_end = window_start + budget.max_time_s

    async def worker() -> None:
        nonlocal issued
        while issued < budget.max_requests and time.perf_counter() < window_end:
            index = issued
            issued += 1
            t0 = time.perf_counter()
            outcome = await send(index)
            done.append(_Done(t0, time.perf_counter(), outcome))

    def clocks() -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), probe.server_cpu_s()

    async def marks() -> tuple[Snapshot, Snapshot]:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        counters = await probe.batch_counters()  # before the window opens
        first = Snapshot(*clocks(), *counters)
        # Close the window at its end, or earlier once the request budget is spent.
        remaining = max(0.0, window_end - time.perf_counter())
        await asyncio.wait(workers, timeout=remaining)
        at, client_cpu_s, server_cpu_s = clocks()
        return first, Snapshot(at, client_cpu_s, server_cpu_s, *await probe.batch_counters())

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    first, last = await marks()
    await asyncio.gather(*workers)
    return Load(done, first, last)


def http_sender(
    pool: wire.HttpPool,
    path: str,
    bodies: list[Body],
    *,
    headers: list[dict[str, str]] | None = None,
    timings: bool = False,
) -> Send:
    """``POST path`` with ``bodies`` in turn, each request's bytes built here, once.

    ``headers`` adds per-body headers (V2's ``Inference-Header-Content-Length``);
    ``timings`` reads the server's ``timings`` from a ``/classify`` answer.
    """
    requests = [
        wire.http_request(
            pool.authority,
            path,
            body.content,
            {"Content-Type": body.content_type, **(headers[i] if headers else {})},
        )
        for i, body in enumerate(bodies)
    ]

    async def send(index: int) -> Outcome:
        try:
            status, answer = await pool.request(requests[index % len(requests)])
        except (OSError, TimeoutError, wire.TransportError):
            return Outcome("0")
        if status != 200:
            return Outcome(str(status))
        return Outcome(None, json.loads(answer)["timings"] if timings else None)

    return send


def classify_sender(pool: wire.HttpPool, path: str, bodies: list[Body]) -> Send:
    """``POST /classify`` with prebuilt bodies (multipart or raw) in turn."""
    return http_sender(pool, path, bodies, timings=True)


def summarise(
    load: Load, *, variant: str, batching: str, concurrency: int, images_per_request: int
) -> LevelResult:
    """Throughput, latency percentiles, batch size and CPU shares of one run's window."""
    done, first, last = load.done, load.first, load.last
    window = max(last.at - first.at, 1e-9)
    measured = [d for d in done if d.started >= first.at]
    completed = [d for d in done if first.at <= d.finished <= last.at and d.outcome.error is None]
    ms = [(d.finished - d.started) * 1000 for d in measured if d.outcome.error is None] or [0.0]
    codes = Counter(d.outcome.error for d in done if d.outcome.error is not None)
    batches = last.batch_count - first.batch_count
    timed = [d.outcome.timings for d in measured if d.outcome.timings] or [{}]

    def server_ms(key: str) -> float:
        return statistics.median(t.get(key, 0.0) for t in timed)

    cpu_capacity = window * machine.cores()
    client_s = last.client_cpu_s - first.client_cpu_s
    server_s = last.server_cpu_s - first.server_cpu_s
    images = len(completed) * images_per_request
    return LevelResult(
        variant=variant,
        batching=batching,
        concurrency=concurrency,
        images_per_request=images_per_request,
        requests=len(done),
        ok=sum(d.outcome.error is None for d in done),
        errors=sum(d.outcome.error is not None for d in done),
        error_codes=dict(codes),
        measured=len(measured),
        window_s=window,
        requests_per_s=len(completed) / window,
        images_per_s=images / window,
        p50_ms=statistics.median(ms),
        p90_ms=percentile(ms, 0.90),
        p99_ms=percentile(ms, 0.99),
        mean_batch_size=(last.batch_sum - first.batch_sum) / batches if batches else 0.0,
        server_decode_ms=server_ms("decode_ms"),
        server_queue_ms=server_ms("queue_ms"),
        server_inference_ms=server_ms("inference_ms"),
        server_total_ms=server_ms("total_ms"),
        client_cpu_share=client_s / cpu_capacity,
        client_cpu_ms_per_request=client_s / len(completed) * 1000 if completed else 0.0,
        server_cpu_share=server_s / cpu_capacity,
        server_cpu_ms_per_image=server_s / images * 1000 if images else 0.0,
        cpu_ms_per_image=(server_s + client_s) / images * 1000 if images else 0.0,
    )


def classify_path(model: str, version: int) -> str:
    return f"/classify?model={model}&version={version}&top_k=1"


def classify_url(server: ServerProcess, model: str, version: int) -> str:
    return f"{server.url}{classify_path(model, version)}"


def model_labels(model: str, version: int) -> dict[str, str]:
    """The /metrics labels of one model version (the batch-size histogram's)."""
    return {"model": model, "version": str(version)}


def run_level(
    server: ServerProcess,
    model: str,
    version: int,
    bodies: list[Body],
    images_per_request: int,
    concurrency: int,
    budget: LoadBudget,
    *,
    batching: str,
) -> LevelResult:
    """One ``/classify`` level: ``concurrency`` clients posting ``bodies`` in turn."""

    async def load() -> Load:
        pool = wire.HttpPool("127.0.0.1", server.port, budget.timeout_s)
        try:
            send = classify_sender(pool, classify_path(model, version), bodies)
            probe = ServiceProbe(server, model_labels(model, version))
            return await closed_loop(send, concurrency, budget, probe)
        finally:
            await pool.aclose()

    return summarise(
        asyncio.run(load()),
        variant=f"{model}:{version}",
        batching=batching,
        concurrency=concurrency,
        images_per_request=images_per_request,
    )


def rows_as_dicts(rows: list[LevelResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
