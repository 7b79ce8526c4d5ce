"""The closed loop and its summary: protocol-free, server-free.

``concurrency`` workers each send the next request as soon as theirs ends (a ``Send``
knows the door), and a :class:`Probe` reads the server's CPU time (per thread too, where
it can: :mod:`benchmarks.threads`) and batch counters at the window's edges. Each level
is one continuous run: the first ``warmup_s`` fill the queue to its steady state and are
not counted; throughput counts completions inside the measured window; requests still
in flight when it closes are awaited (so the next level starts on an idle server) but not
counted. The client's own CPU time (this process, all threads) over the window is part of
every summary.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from benchmarks import machine, threads
from benchmarks.harness import percentile


@dataclass(frozen=True)
class LoadBudget:
    max_requests: int = 2000
    max_time_s: float = 8.0
    warmup_s: float = 2.0
    timeout_s: float = 60.0
    #: A worker whose request failed waits this long before its next one: refusals come
    #: back at once (gRPC past the server's concurrent-call limit), and a closed loop
    #: re-sending them at once would spend the machine's CPU on errors.
    error_pause_s: float = 1.0


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
    #: The same split by what each server thread does (:data:`benchmarks.threads.GROUPS`:
    #: event loop, decode, parse, engine, grpc, other), exact from /proc; empty where the
    #: probe cannot see the server's threads (Triton).
    server_cpu_ms_by_thread: dict[str, float] = field(default_factory=dict)
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
    #: Every server thread's CPU time, where the probe can read them.
    server_threads: threads.ThreadSnapshot | None = None


class Probe(Protocol):
    """What the loop reads from a server (ours, Triton): its CPU time so far, in all and
    per thread (cheap, read at the very edge of the window; None where the threads are
    not the server's to name) and its batch-size counters (a scrape, read outside the
    window so its cost is counted neither to the client nor the server)."""

    def server_cpu_s(self) -> float: ...

    def server_threads(self) -> threads.ThreadSnapshot | None: ...

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
            if outcome.error is not None:
                await asyncio.sleep(budget.error_pause_s)

    def clocks() -> tuple[float, float, float, threads.ThreadSnapshot | None]:
        # Server threads right after the totals: one small /proc read per thread.
        totals = time.perf_counter(), time.process_time(), probe.server_cpu_s()
        return (*totals, probe.server_threads())

    async def marks() -> tuple[Snapshot, Snapshot]:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        counters = await probe.batch_counters()  # before the window opens
        at, client_cpu_s, server_cpu_s, server_threads = clocks()
        first = Snapshot(at, client_cpu_s, server_cpu_s, *counters, server_threads)
        # Close the window at its end, or earlier once the request budget is spent.
        remaining = max(0.0, window_end - time.perf_counter())
        await asyncio.wait(workers, timeout=remaining)
        at, client_cpu_s, server_cpu_s, server_threads = clocks()
        counters = await probe.batch_counters()
        return first, Snapshot(at, client_cpu_s, server_cpu_s, *counters, server_threads)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    first, last = await marks()
    await asyncio.gather(*workers)
    return Load(done, first, last)


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
    by_thread: dict[str, float] = {}
    if first.server_threads is not None and last.server_threads is not None:
        spent = threads.cpu_by_group(first.server_threads, last.server_threads)
        by_thread = threads.ms_per_image(spent, images)
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
        server_cpu_ms_by_thread=by_thread,
        cpu_ms_per_image=(server_s + client_s) / images * 1000 if images else 0.0,
    )
