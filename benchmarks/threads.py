"""A server's CPU time per thread, from /proc, grouped by what each thread does.

Why not a profiler's shares: py-spy ``--native`` samples the native stacks of threads
that are waiting, and files them under whatever Python frame sits on top; the event
loop's thread, parked in ``epoll_wait`` most of the time, comes out several times too
expensive. The kernel's own accounting is exact: each thread's time on a CPU, in
nanoseconds (``/proc/<pid>/task/<tid>/schedstat``, field 1). Where a kernel has no
schedstat, ``utime + stime`` of the thread's ``stat`` stand in: the same figure in clock
ticks (10 ms each, per thread: a window of a few images then reads 0 for a light thread).

Which thread does what, from its OS name (``comm``, given by :mod:`service.threads`):

* ``event loop``: the main thread (``tid == pid``): HTTP, gRPC's Python side, routing,
  everything on the asyncio loop.
* ``decode`` (``decode_<n>``, ``decode-heavy_<n>``) and ``parse`` (``parse_<n>``).
* ``engine``: the batchers' ``engine-<model>`` threads, and the threads left with the
  process's own name: ONNX Runtime's (and OpenMP's) pool threads, created unnamed
  while a model loads. The event loop's default executor (model loading, repository
  polls) also keeps that name; it idles while a benchmark runs.
* ``grpc``: gRPC's C-core threads (``event_engine``, ``grpc_global_tim``,
  ``lifeguard``; ``default-executo`` and ``resolver-execu`` in older releases).
* ``other``: anything else (libuv's ``libuv-worker``...).

A thread that ends inside the window takes its CPU time with it (the per-process
total in ``/proc/<pid>/stat`` keeps it): the service's own threads live as long as it
does, so the groups add up to the process's total but for such short-lived helpers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GROUPS",
    "ThreadSnapshot",
    "ThreadTimes",
    "cpu_by_group",
    "group_of",
    "ms_per_image",
    "parse_stat",
    "snapshot",
]

EVENT_LOOP, DECODE, PARSE, ENGINE, GRPC, OTHER = (
    "event loop",
    "decode",
    "parse",
    "engine",
    "grpc",
    "other",
)
#: Every group, in the order reports print them.
GROUPS = (EVENT_LOOP, DECODE, PARSE, ENGINE, GRPC, OTHER)

#: gRPC C-core thread names (cut to 15 bytes by the kernel), by how they start.
GRPC_NAMES = ("grpc", "event_engine", "lifeguard", "default-executo", "resolver-execu")


@dataclass(frozen=True)
class ThreadTimes:
    """One thread at one instant: its OS name and CPU time so far (user + system)."""

    comm: str
    cpu_s: float


@dataclass(frozen=True)
class ThreadSnapshot:
    """Every live thread of process ``pid`` at one instant, by thread id."""

    pid: int
    #: The process's own name: the one its unnamed threads inherit.
    process_comm: str
    threads: Mapping[int, ThreadTimes]


def parse_stat(text: str, ticks_per_s: float) -> ThreadTimes:
    """A ``/proc/.../stat`` line into (comm, utime + stime in seconds).

    The name (field 2) sits in parentheses and may itself hold spaces or ``)``: it runs
    to the *last* closing parenthesis; utime and stime are fields 14 and 15 of proc(5).
    """
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    return ThreadTimes(head.partition("(")[2], (int(fields[11]) + int(fields[12])) / ticks_per_s)


def snapshot(pid: int, proc: Path = Path("/proc")) -> ThreadSnapshot:
    """Every thread of ``pid`` now; a thread that ends while being read is left out."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    root = proc / str(pid)
    precise = (root / "schedstat").is_file()  # one kernel: all threads have it, or none
    threads: dict[int, ThreadTimes] = {}
    for task in (root / "task").iterdir():
        try:
            times = parse_stat((task / "stat").read_text(), ticks_per_s)
            if precise:
                on_cpu_ns = int((task / "schedstat").read_text().split()[0])
                times = ThreadTimes(times.comm, on_cpu_ns / 1e9)
        except (FileNotFoundError, ProcessLookupError):
            continue
        threads[int(task.name)] = times
    process_comm = (root / "comm").read_text().rstrip("\n")
    return ThreadSnapshot(pid, process_comm, threads)


def group_of(tid: int, comm: str, *, pid: int, process_comm: str) -> str:
    """What thread ``tid`` (OS name ``comm``) of process ``pid`` does (see the module)."""
    if tid == pid:
        return EVENT_LOOP
    if comm.startswith("decode"):
        return DECODE
    if comm.startswith("parse"):
        return PARSE
    if comm.startswith("engine") or comm == process_comm:
        return ENGINE
    if comm.startswith(GRPC_NAMES):
        return GRPC
    return OTHER


def cpu_by_group(before: ThreadSnapshot, after: ThreadSnapshot) -> dict[str, float]:
    """CPU seconds each group spent between two snapshots of one process, every group
    present (0.0 when idle), in :data:`GROUPS` order.

    A thread born inside the window counts from zero. A thread id seen with less CPU
    time than before is a new thread that reuses an ended one's id: it too counts from
    zero. A thread is grouped by its name at the end (a pool worker names itself as it
    starts, so the first snapshot may still show the name it inherited).
    """
    if before.pid != after.pid:
        raise ValueError(f"snapshots of two processes ({before.pid} and {after.pid})")
    spent = dict.fromkeys(GROUPS, 0.0)
    for tid, now in after.threads.items():
        then = before.threads.get(tid)
        start = then.cpu_s if then is not None and then.cpu_s <= now.cpu_s else 0.0
        group = group_of(tid, now.comm, pid=after.pid, process_comm=after.process_comm)
        spent[group] += now.cpu_s - start
    return spent


def ms_per_image(cpu_s: Mapping[str, float], images: int) -> dict[str, float]:
    """CPU seconds per group into CPU-ms per image (empty when no image completed)."""
    if images <= 0:
        return {}
    return {group: seconds * 1000 / images for group, seconds in cpu_s.items()}
