"""CPU engines and image decoding take turns on the cores, instead of fighting over them.

On a CPU, an engine runs each batch on every core (ONNX Runtime's intra-op threads, one
per core by default), and the decode threads want the same cores. Run side by side, each
decode descheduling an intra-op thread stalls the whole parallel step and evicts its
caches: measured on 2 cores (resnet18, batch 8, ``benchmarks/contention.py``), decoding
that took 14 % of the machine beside the engine raised the engine's own CPU per image by
14 % and cut its throughput by 28 %. Taking turns costs nothing the cores could
have done, as long as batches stay full:

* **Decodes wait while a CPU engine runs a batch** (:meth:`CpuTurns.wait_for_engines`,
  in the decode thread, before any work). A decode already running finishes.
* **A batch waits for the decodes in flight** (:meth:`CpuTurns.decodes_settled`, on the
  event loop, before the batcher takes its batch), at most ``cpu_turn_wait_ms``: the
  images decoding now join this batch instead of waiting a whole batch for the next.
* **One CPU engine batch at a time**: two models' batches on the same cores would fight
  as a decode does.

Engines on a GPU take no turns (the cores are free while they run), and at low load
nothing changes: a lone request finds no engine running and nothing decoding. Turned
off by ``cpu_turns=off``; "auto" (the default) takes turns only when the engine's
intra-op threads cover every core the process may use, i.e. when they would collide.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client import Histogram

__all__ = ["CpuTurns", "runs_on_cpu"]

#: Engine providers that compute on the host's cores.
_CPU_PROVIDERS = ("CPUExecutionProvider", "cpu")


def runs_on_cpu(provider: str) -> bool:
    """Whether an engine with this provider (``Engine.provider``) computes on the CPU."""
    return provider in _CPU_PROVIDERS


class CpuTurns:
    """The turn-taking of one process's CPU engines and decode threads (see module doc).

    ``enabled=False`` makes every method a no-op, so callers never branch on it.
    """

    def __init__(self, *, enabled: bool, max_wait_s: float, waits: Histogram | None = None) -> None:
        self.enabled = enabled
        self.max_wait_s = max_wait_s
        # Observed per side ("batch", "decode") when a wait happened: the cost of turns.
        self._batch_waits = waits.labels("batch") if waits is not None else None
        self._decode_waits = waits.labels("decode") if waits is not None else None
        # Set while no CPU engine runs; decode threads wait on it.
        self._engines_idle = threading.Event()
        self._engines_idle.set()
        # One CPU engine batch at a time (held in the engine thread for the batch).
        self._engine_lock = threading.Lock()
        # Decodes submitted and not yet finished; counted on the event loop only.
        self._decoding = 0
        self._settled = asyncio.Event()
        self._settled.set()

    # -- the decode side ---------------------------------------------------------------
    def decode_submitted(self) -> None:
        """On the event loop, as a decode job is handed to a lane."""
        if self.enabled:
            self._decoding += 1
            self._settled.clear()

    def decode_finished(self) -> None:
        """On the event loop, once that job ended (done, failed or cancelled unrun)."""
        if self.enabled:
            self._decoding -= 1
            if self._decoding == 0:
                self._settled.set()

    def wait_for_engines(self) -> None:
        """In a decode thread, before decoding: wait while a CPU engine runs a batch."""
        if not self.enabled or self._engines_idle.is_set():
            return
        started = time.monotonic()
        self._engines_idle.wait()
        if self._decode_waits is not None:
            self._decode_waits.observe(time.monotonic() - started)

    # -- the engine side ---------------------------------------------------------------
    async def decodes_settled(self) -> None:
        """On the event loop, before a CPU batch is taken: let the decodes in flight
        finish (they join this batch), for at most ``max_wait_s``."""
        if not self.enabled or self._decoding == 0:
            return
        started = time.monotonic()
        with suppress(TimeoutError):  # past it, the batch takes what is there
            await asyncio.wait_for(self._settled.wait(), self.max_wait_s)
        if self._batch_waits is not None:
            self._batch_waits.observe(time.monotonic() - started)

    @contextmanager
    def engine_turn(self) -> Iterator[None]:
        """In the engine thread, around one CPU batch: the cores are the engine's."""
        if not self.enabled:
            yield
            return
        with self._engine_lock:
            self._engines_idle.clear()
            try:
                yield
            finally:
                self._engines_idle.set()

    @classmethod
    def off(cls) -> CpuTurns:
        """Turns nobody takes: for lanes and batchers built without a shared instance."""
        return cls(enabled=False, max_wait_s=0.0)

    @property
    def decoding(self) -> int:
        """Decode jobs in flight (for tests)."""
        return self._decoding
