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

This module holds the HTTP side (bodies, senders, our server's probe, one ``/classify``
level); the loop itself (:mod:`benchmarks.loop`) knows no protocol (it takes a ``send``)
and no server (a ``Probe`` reads its CPU time and batch sizes), so every door of our
server and of Triton is measured by the same loop.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import uvloop

from benchmarks import threads, wire
from benchmarks.harness import ServerProcess, metric_value

# The loop's names, re-exported: callers (doors, triton, ab, profile) use them as http.*.
from benchmarks.loop import (
    LevelResult,
    Load,
    LoadBudget,
    Outcome,
    Probe,
    Send,
    Snapshot,
    closed_loop,
    summarise,
)

__all__ = [
    "Body",
    "LevelResult",
    "Load",
    "LoadBudget",
    "Outcome",
    "Probe",
    "Send",
    "ServiceProbe",
    "Snapshot",
    "closed_loop",
    "summarise",
]


@dataclass(frozen=True)
class Body:
    content: bytes
    content_type: str


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
    """Our server: CPU time from /proc (in all and per thread: its threads carry their
    OS names), batch sizes from its /metrics histogram."""

    def __init__(self, server: ServerProcess, labels: dict[str, str]) -> None:
        self.server, self.labels = server, labels

    def server_cpu_s(self) -> float:
        return self.server.cpu_seconds()

    def server_threads(self) -> threads.ThreadSnapshot:
        return threads.snapshot(self.server.process.pid)

    async def batch_counters(self) -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(f"{self.server.url}/metrics")).text
        return (
            metric_value(text, "resnet_serve_batch_size_sum", **self.labels),
            metric_value(text, "resnet_serve_batch_size_count", **self.labels),
        )


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
        uvloop.run(load()),
        variant=f"{model}:{version}",
        batching=batching,
        concurrency=concurrency,
        images_per_request=images_per_request,
    )


def rows_as_dicts(rows: list[LevelResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
