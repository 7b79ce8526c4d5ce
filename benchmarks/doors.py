"""Every front door of one server under the same closed-loop load, in the same run.

Why: the V2 doors (REST and gRPC, JPEG bytes or preprocessed FP32 pixels) share the
pipeline and batcher with ``/classify``; what differs is the protocol work around them.
Measuring them on one server, with the same images, concurrency, loop, window and CPU
accounting (:func:`benchmarks.http.closed_loop`), makes their img/s directly
comparable; at each concurrency the doors run one after the other, so drifting load
on a shared machine touches them alike. Triton (:mod:`benchmarks.triton`) is measured
through the same requests and senders.

Every request carries one image and asks for the top class only (``top_k=1``, the
classification extension with ``k = 1``), so answers are equally small. Every request
is built once, up front, as the bytes the client writes (multipart and raw bodies;
tritonclient's own binary-extension bodies; serialised protobuf ``ModelInferRequest``
with ``raw_input_contents``; FP32 pixels preprocessed once with the model's own
:class:`~service.preprocess.Preprocessor`): a request costs the client only its
transport (:mod:`benchmarks.wire`), one HTTP/1.1 connection per worker and one shared
HTTP/2 channel for gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop

from benchmarks import http, wire

# Re-exported (callers and tests use doors.build_requests): the requests' own module.
from benchmarks.door_requests import OUTPUT as OUTPUT
from benchmarks.door_requests import Requests as Requests
from benchmarks.door_requests import build_requests as build_requests
from benchmarks.harness import ServerProcess
from benchmarks.inputs import label
from service.repository import ModelEntry, ModelVersion

OURS = "resnet-serve"


@dataclass(frozen=True)
class Door:
    """One way in: the protocol (``door``, the metrics' ``protocol`` label) and what the
    client sends (``input``: a ``multipart`` or ``raw`` JPEG body, a ``BYTES`` tensor
    holding the encoded image, ``FP32`` pixels)."""

    door: str
    input: str

    @property
    def key(self) -> str:
        return f"{self.door} {self.input}"


CLASSIFY = Door("classify", "multipart")
CLASSIFY_RAW = Door("classify", "raw")
V2_REST_BYTES = Door("v2-rest", "BYTES")
V2_GRPC_BYTES = Door("v2-grpc", "BYTES")
DOORS = (
    CLASSIFY,
    CLASSIFY_RAW,
    V2_REST_BYTES,
    Door("v2-rest", "FP32"),
    V2_GRPC_BYTES,
    Door("v2-grpc", "FP32"),
)


@dataclass(frozen=True)
class Target:
    """Where the load goes: a server's ports, the model asked for, its counters."""

    server: str
    http_port: int
    grpc_port: int
    model: str
    version: int
    probe: http.Probe
    #: The doors this server has (Triton: the V2 ones).
    doors: tuple[Door, ...] = DOORS


def _grpc_sender(
    call: grpc.aio.UnaryUnaryMultiCallable, messages: list[bytes], timeout_s: float
) -> http.Send:
    async def send(index: int) -> http.Outcome:
        try:
            await call(messages[index % len(messages)], timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return http.Outcome(error.code().name)
        return http.Outcome(None)

    return send


def _rest_sender(pool: wire.HttpPool, path: str, bodies: list[tuple[bytes, int]]) -> http.Send:
    return http.http_sender(
        pool,
        path,
        [http.Body(body, "application/octet-stream") for body, _ in bodies],
        headers=[{"Inference-Header-Content-Length": str(size)} for _, size in bodies],
    )


@asynccontextmanager
async def _senders(
    target: Target, requests: Requests, timeout_s: float
) -> AsyncIterator[dict[Door, http.Send]]:
    """A sender per door the requests cover, over one pool and one gRPC channel."""
    pool = wire.HttpPool("127.0.0.1", target.http_port, timeout_s)
    infer = f"/v2/models/{target.model}/versions/{target.version}/infer"
    classify = http.classify_path(target.model, target.version)
    try:
        async with wire.grpc_channel("127.0.0.1", target.grpc_port) as channel:
            await channel.channel_ready()
            call = wire.raw_model_infer(channel)
            yield {
                CLASSIFY: http.classify_sender(pool, classify, requests.multipart),
                CLASSIFY_RAW: http.classify_sender(pool, classify, requests.raw),
                **{
                    Door("v2-rest", kind): _rest_sender(pool, infer, bodies)
                    for kind, bodies in requests.rest.items()
                },
                **{
                    Door("v2-grpc", kind): _grpc_sender(
                        call, [m.SerializeToString() for m in messages], timeout_s
                    )
                    for kind, messages in requests.grpc.items()
                },
            }
    finally:
        await pool.aclose()


OnRow = Callable[[Door, http.LevelResult], None]


async def measure(
    target: Target,
    requests: Requests,
    doors: Sequence[Door],
    concurrency: Sequence[int],
    budget: http.LoadBudget,
    on_row: OnRow,
    *,
    time_left: Callable[[str], bool] = lambda _: True,
) -> None:
    """Each concurrency level in turn, every door at that level one after the other."""
    async with _senders(target, requests, budget.timeout_s) as senders:
        for level in concurrency:
            for door in doors:
                if door not in senders:
                    continue
                if not time_left(f"{target.server} {door.key} c{level}"):
                    return
                load = await http.closed_loop(senders[door], level, budget, target.probe)
                row = http.summarise(
                    load,
                    variant=f"{target.model}:{target.version}",
                    batching="on",
                    concurrency=level,
                    images_per_request=1,
                )
                on_row(door, row)


def printer(server: str, rows: list[tuple[Door, http.LevelResult]]) -> OnRow:
    """Keeps each row and prints it as it comes."""

    def on_row(door: Door, row: http.LevelResult) -> None:
        rows.append((door, row))
        print(
            f"  {server:<12} {door.key:<16} c{row.concurrency:<3} {row.images_per_s:7.1f} img/s"
            f"  p50 {row.p50_ms:7.1f}  p99 {row.p99_ms:7.1f} ms  batch "
            f"{row.mean_batch_size:5.2f}  errors {row.errors}  client "
            f"{row.client_cpu_ms_per_request:.2f} CPU-ms/req ({row.client_cpu_share:.1%})",
            flush=True,
        )

    return on_row


def rows_with_ratios(
    rows: list[tuple[Door, http.LevelResult]], server: str = OURS
) -> list[dict[str, Any]]:
    """The JSON rows: server, door, input, the level's figures, and img/s over the best
    door's and over ``/classify`` multipart's at the same concurrency."""

    def at(level: int) -> list[tuple[Door, http.LevelResult]]:
        return [(d, r) for d, r in rows if r.concurrency == level]

    out = []
    for door, row in rows:
        same = at(row.concurrency)
        best = max(r.images_per_s for _, r in same)
        base = next((r.images_per_s for d, r in same if d == CLASSIFY), 0.0)
        out.append(
            {
                "server": server,
                "door": door.door,
                "input": door.input,
                **asdict(row),
                "over_best_door": row.images_per_s / best if best else None,
                "over_classify": row.images_per_s / base if base else None,
            }
        )
    return out


@dataclass(frozen=True)
class Workload:
    """A named image set, the doors it goes through and the levels it runs at."""

    name: str
    images: list[Path]
    doors: Sequence[Door]
    concurrency: Sequence[int]
    #: The servers (``Target.server``) it goes to; None: every target.
    servers: tuple[str, ...] | None = None


def run_workloads(
    targets: Sequence[Target],
    model: tuple[ModelEntry, ModelVersion],
    workloads: Sequence[Workload],
    *,
    max_pixels: int,
    budget: http.LoadBudget,
    time_left: Callable[[str], bool] = lambda _: True,
    rounds: int = 1,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Rows per server and workload, on servers already up, **interleaved**: at each
    level every server takes its doors in turn before the next level starts, so on a
    shared machine the figures compared (ours and Triton's at one level) are seconds
    apart, not minutes. With ``rounds`` > 1 the servers alternate that many times at
    each level and each (door, level) keeps its median round by images/s
    (:func:`median_rounds`): a machine whose speed switches now and then (a VM's) moves
    single slices by 15-25 %, and a pair split by a switch reads as a lead or a loss."""
    entry, version = model
    rows: dict[str, dict[str, list[tuple[Door, http.LevelResult]]]] = {
        t.server: {w.name: [] for w in workloads} for t in targets
    }
    for work in workloads:
        fp32 = any(d.input == "FP32" for d in work.doors)
        number = version.info.version
        requests = build_requests(entry, number, work.images, max_pixels, fp32=fp32)
        for level in work.concurrency:
            for _ in range(rounds):
                for target in targets:
                    if work.servers is not None and target.server not in work.servers:
                        continue
                    here = [d for d in work.doors if d in target.doors]
                    on_row = printer(target.server, rows[target.server][work.name])
                    run = measure(
                        target, requests, here, [level], budget, on_row, time_left=time_left
                    )
                    uvloop.run(run)
    return {
        server: {
            name: rows_with_ratios(median_rounds(r), server=server) for name, r in by_work.items()
        }
        for server, by_work in rows.items()
    }


def median_rounds(
    rows: list[tuple[Door, http.LevelResult]],
) -> list[tuple[Door, http.LevelResult]]:
    """One row per (door, level): the median round by images/s (the lower middle one of
    an even count), in first-seen order; a single round is kept as it is."""
    rounds: dict[tuple[Door, int], list[http.LevelResult]] = {}
    for door, row in rows:
        rounds.setdefault((door, row.concurrency), []).append(row)
    kept = []
    for (door, _), measured in rounds.items():
        ranked = sorted(measured, key=lambda r: r.images_per_s)
        kept.append((door, ranked[(len(ranked) - 1) // 2]))
    return kept


@contextmanager
def our_server(
    repository: Path,
    model: tuple[ModelEntry, ModelVersion],
    log: Path,
    *,
    settings: dict[str, str],
    cpus: str | None = None,
) -> Iterator[Target]:
    """One of our servers serving ``model``, as a load target."""
    entry, version = model
    name, number = entry.config.name, version.info.version
    quiet: dict[str, Any] = {"log_level": "warning", **settings}
    with ServerProcess(repository, log, cpus=cpus, **quiet) as server:
        probe = http.ServiceProbe(server, http.model_labels(name, number))
        yield Target(OURS, server.port, server.grpc_port, name, number, probe)


def run_doors(
    repository: Path,
    model: tuple[ModelEntry, ModelVersion],
    workloads: Sequence[Workload],
    log: Path,
    *,
    settings: dict[str, str],
    max_pixels: int,
    budget: http.LoadBudget,
    cpus: str | None = None,
    time_left: Callable[[str], bool] = lambda _: True,
) -> dict[str, list[dict[str, Any]]]:
    """Every workload against one of our servers serving ``model``."""
    print(f"== {OURS} {label(*model)}", flush=True)
    with our_server(repository, model, log, settings=settings, cpus=cpus) as target:
        return run_workloads(
            [target], model, workloads, max_pixels=max_pixels, budget=budget, time_left=time_left
        )[OURS]
