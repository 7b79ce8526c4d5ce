"""Two decode lanes, so that a few expensive images never take every decode thread.

A decode cannot be interrupted once Pillow starts it, and its time grows with the work
estimated from the header (:attr:`~service.preprocess.OpenedImage.work`, pixel-passes), not
with the bytes sent: two crafted progressive JPEGs of 860 KB once held both decode
threads for 48 s, and every valid request in that time got 504.

The rule:

* Every header is read in the cheap lane (``Preprocessor.open`` is bounded: see
  :mod:`service.decode_cost`). An image whose work is at most ``heavy_decode_work`` is
  decoded there too, by ``decode_threads`` threads.
* An image above it is decoded in the heavy lane, by ``heavy_decode_threads`` threads
  (1 by default). Heavy images wait for each other there, bounded by their requests'
  deadlines and by ``max_queue_size``; they never wait for, nor delay, a cheap image
  beyond the CPU the heavy lane's threads share with it.
* Images above ``max_decode_work`` are refused from the header (413) and never run.

A job cancelled before a thread takes it never runs (``concurrent.futures`` semantics),
so a request that gave up frees its place in either lane at once. :meth:`shutdown` pairs
with construction: it stops both lanes and cancels every job not yet started.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from service.batching.turns import CpuTurns
from service.preprocess import OpenedImage
from service.settings import Settings
from service.threads import named_executor

__all__ = ["DecodeLanes"]

T = TypeVar("T")


class DecodeLanes:
    """A cheap and a heavy thread pool, chosen per job by estimated decode work."""

    def __init__(
        self,
        *,
        threads: int,
        heavy_threads: int,
        heavy_work: int,
        turns: CpuTurns | None = None,
    ) -> None:
        if threads < 1 or heavy_threads < 1:
            raise ValueError(
                f"each lane needs at least one thread (threads={threads}, "
                f"heavy_threads={heavy_threads})"
            )
        #: Work (pixel-passes) above which a decode goes to the heavy lane.
        self.heavy_work = heavy_work
        #: Decodes wait their turn while a CPU engine runs (service/batching/turns.py).
        self.turns = turns or CpuTurns.off()
        # Named (``decode_0``, ``decode-heavy_0``) in the OS too: see service/threads.py.
        self._cheap = named_executor(threads, "decode")
        self._heavy = named_executor(heavy_threads, "decode-heavy")

    @classmethod
    def from_settings(cls, settings: Settings, turns: CpuTurns | None = None) -> DecodeLanes:
        return cls(
            threads=settings.effective_decode_threads(),
            heavy_threads=settings.heavy_decode_threads,
            heavy_work=settings.heavy_decode_work,
            turns=turns,
        )

    def is_heavy(self, opened: OpenedImage) -> bool:
        """Whether this image's decode belongs in the heavy lane."""
        return opened.work > self.heavy_work

    def submit(self, job: Callable[[], T], *, heavy: bool) -> Future[T]:
        """Run ``job`` in one lane; cancelled before it starts, it never runs.

        A cheap job starts after any CPU batch running now (:mod:`service.batching.turns`).
        A heavy one takes no turns: its lane has few threads, and holding it (or a
        batch) for the other would leave cores idle for a whole heavy decode.
        """
        if heavy:
            return self._heavy.submit(job)
        turns = self.turns

        def in_turn() -> T:
            turns.wait_for_engines()
            return job()

        return self._cheap.submit(in_turn)

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = True) -> None:
        """Stop both lanes: jobs not yet started are cancelled, running ones finish."""
        self._heavy.shutdown(wait=False, cancel_futures=cancel_futures)
        self._cheap.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            self._heavy.shutdown(wait=True)
