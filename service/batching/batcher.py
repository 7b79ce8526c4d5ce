"""The dynamic batcher: one per served model version.

How a batch forms (no fixed wait, so no added latency at low load):

* The worker takes everything queued the moment the engine is free, up to
  ``max_batch_size``. Under load, images pile up while the previous batch runs, so
  batches grow by themselves; a lone request runs at once.
* ``max_queue_delay_ms`` tops a batch up only while other images of this model are
  still being decoded (they hold a reservation, see below): then waiting a moment is
  known to pay. When nothing is on its way, the worker never waits.

Admission: a request first *reserves* queue room, before its body is read (one image)
and again once its images are counted (:meth:`Reservation.resize`), always before any
decoding, so an overloaded server refuses in microseconds (503 + Retry-After) instead
of spending CPU on images it cannot run. Reserved + queued images never exceed
``max_queue_size``; a queued image whose request already gave up (deadline, client
gone, a sibling image failed) stops counting at once, not when the worker reaches it.

Every future is answered: with logits, with :class:`DeadlineExceeded` if it waited past
its deadline (its image is then not run), with :class:`EngineError` if the batch failed,
or with :class:`ModelUnavailable` when the service stops before it could run.
Only the worker takes items from the queue (one owner, no locks: all of this runs on the
event loop; only stacking the batch and ``engine.run`` run in the model's own engine
thread, so the event loop never copies tensors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.batching.reservation import Collated, ItemResult, Reservation, stack_arrays
from service.batching.turns import CpuTurns
from service.engines.base import Engine
from service.errors import DeadlineExceeded, EngineError, ModelUnavailable, Overloaded
from service.metrics import Metrics
from service.threads import named_executor

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Item:
    tensor: Any
    future: asyncio.Future[ItemResult]
    enqueued_at: float
    deadline: float


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_size: int


class _Observer:
    """The batcher's metric children, resolved once instead of on every observation."""

    def __init__(self, metrics: Metrics, labels: tuple[str, str]) -> None:
        self.queue_wait = metrics.queue_wait.labels(*labels)
        self.inference = metrics.inference_duration.labels(*labels)
        self.batch_size = metrics.batch_size.labels(*labels)
        self.queue_depth = metrics.queue_depth.labels(*labels)
        self.batch_running = metrics.batch_running.labels(*labels)


class Batcher:
    """Groups images of one model version into engine batches."""

    def __init__(
        self,
        engine: Engine,
        config: BatcherConfig,
        metrics: Metrics,
        labels: tuple[str, str],
        collate: Callable[[Sequence[Any]], Collated] | None = None,
        turns: CpuTurns | None = None,
    ) -> None:
        self.engine = engine
        #: Turns with the decode threads on the cores; None: the engine takes none (GPU).
        self._turns = turns or CpuTurns.off()
        #: Turns queued items into one engine batch: the model preprocessor's (a stack,
        #: or a batched GPU decode). The batcher never looks inside an item.
        self._collate = collate or stack_arrays
        self.config = config
        self._observe = _Observer(metrics, labels)
        self._name = f"{labels[0]}:{labels[1]}"
        self._pending: deque[_Item] = deque()
        self._waiting = 0  # items in _pending whose future is not done yet
        self._reserved = 0
        self._running_since: float | None = None
        #: When the last batch ended, in milliseconds since the epoch (0: none yet); the
        #: V2 statistics' ``last_inference``.
        self.last_batch_ms = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._stopped = False
        self._worker: asyncio.Task[None] | None = None
        # One thread per model: the engine is never entered concurrently, and a slow
        # model cannot starve another one's batches. Its OS name (``engine-resnet18``,
        # cut to 15 bytes) tells it apart in top -H and in benchmarks.threads.
        self._executor = named_executor(1, f"engine-{self._name}")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._observe.batch_running.set_function(self.batch_age_s)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"batcher-{self._name}")

    async def stop(self, drain_timeout_s: float) -> None:
        """Refuse new work, let queued work finish (bounded), answer whatever is left.

        Safe to call again (a second signal cuts a drain): it then only answers what is
        left. After it returns, images submitted under an older reservation are refused.
        """
        self._closing = True
        self._arrived.set()
        worker = self._worker
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(asyncio.shield(worker), drain_timeout_s)
            except TimeoutError:
                logger.error("%s: drain timed out after %.1fs", self._name, drain_timeout_s)
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        self._stopped = True
        self._fail_pending(ModelUnavailable("the server is shutting down; retry elsewhere"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        """Images queued whose request still waits for them."""
        return self._waiting

    def batch_age_s(self) -> float:
        """How long the batch in the engine has been running (0 when idle)."""
        started = self._running_since
        return 0.0 if started is None else time.monotonic() - started

    # -- admission ---------------------------------------------------------------------
    def reserve(self, count: int) -> Reservation:
        """Hold room for ``count`` images or refuse at once."""
        self.check_room(count)
        self._reserved += count
        return Reservation(self, count)

    def check_room(self, count: int = 1, *, admitted: bool = False) -> None:
        """Raise unless ``count`` more images fit now (reserve and resize ask this).

        A closing batcher refuses new requests, not ones ``admitted`` before: their
        reservation keeps the drain waiting for them.
        """
        if self._closing and not admitted:
            raise ModelUnavailable("the server is shutting down; retry elsewhere")
        used = self._reserved + self._waiting
        if used + count > self.config.max_queue_size:
            raise Overloaded(
                f"model {self._name} has {used} images queued; its queue holds "
                f"{self.config.max_queue_size}. Retry shortly.",
                queued=used,
                max_queue_size=self.config.max_queue_size,
            )

    def hold(self, count: int) -> None:
        """Count ``count`` more images as reserved; negative gives room back."""
        self._reserved += count
        if count < 0:
            self._arrived.set()  # a topping-up worker need not wait for these any more

    async def enqueue(self, tensors: Sequence[Any], deadline: float) -> list[ItemResult]:
        """Queue items held by a reservation and wait for their results, in order."""
        if self._stopped or (self._closing and self._worker is None):
            raise ModelUnavailable("the server is shutting down; retry elsewhere")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Item(t, loop.create_future(), now, deadline) for t in tensors]
        for item in items:
            item.future.add_done_callback(self._item_done)
        if len(self._pending) > 2 * self.config.max_queue_size:
            # Items whose request gave up stop counting at once but stay in the deque
            # until the worker pops them; behind a stuck engine they would pile up.
            self._pending = deque(i for i in self._pending if not i.future.done())
        self._pending.extend(items)
        self._waiting += len(items)
        self._observe.queue_depth.set(self._waiting)
        self._arrived.set()
        try:
            # The deadline is kept even if the batch ahead never ends (a stuck engine):
            # the client gets its 504 on time and its still-queued images are skipped.
            futures = [i.future for i in items]
            _, pending = await asyncio.wait(
                futures, timeout=max(deadline - now, 0.0), return_when=asyncio.FIRST_EXCEPTION
            )
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            if pending:
                raise DeadlineExceeded(
                    f"no result within the request's deadline ({deadline - now:.3f}s after "
                    "queueing); images not yet run were dropped"
                )
            return [f.result() for f in futures]
        finally:
            # One image failed (or the caller went away): do not run the others.
            for item in items:
                if not item.future.done():
                    item.future.cancel()

    def _item_done(self, _: asyncio.Future[ItemResult]) -> None:
        self._waiting -= 1
        self._observe.queue_depth.set(self._waiting)
        self._arrived.set()  # room freed: a topping-up worker re-checks

    # -- the worker --------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            await self._process(batch)

    async def _next_batch(self) -> list[_Item] | None:
        """Wait for work; None once closing and everything accepted has been run."""
        while not self._pending:
            if self._closing and self._reserved == 0:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        # Images decoding now would otherwise wait this whole batch for the next one.
        await self._turns.decodes_settled()
        limit = self.config.max_batch_size
        batch = self._take(limit)
        delay_s = self.config.max_queue_delay_ms / 1000.0
        if delay_s > 0 and len(batch) < limit and self._reserved > 0:
            until = time.monotonic() + delay_s
            while len(batch) < limit:
                if self._pending:
                    batch.extend(self._take(limit - len(batch)))
                    continue
                remaining = until - time.monotonic()
                if self._reserved == 0 or remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
        return batch

    def _take(self, count: int) -> list[_Item]:
        taken: list[_Item] = []
        while self._pending and len(taken) < count:
            item = self._pending.popleft()
            if not item.future.done():  # skip items whose request already failed
                # In the engine's hands now: it no longer counts as queued.
                item.future.remove_done_callback(self._item_done)
                self._waiting -= 1
                taken.append(item)
        self._observe.queue_depth.set(self._waiting)
        return taken

    async def _process(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        runnable: list[_Item] = []
        for item in batch:
            if item.future.done():
                continue
            if item.deadline <= started:
                item.future.set_exception(
                    DeadlineExceeded(
                        f"the request waited {started - item.enqueued_at:.3f}s in the queue, "
                        "past its deadline; its images were not run"
                    )
                )
                continue
            runnable.append(item)
        if not runnable:
            return
        loop = asyncio.get_running_loop()
        try:
            for item in runnable:
                self._observe.queue_wait.observe(started - item.enqueued_at)
            tensors = [item.tensor for item in runnable]
            run_started = self._running_since = time.monotonic()
            logits, rejected = await loop.run_in_executor(
                self._executor, self._stack_and_run, tensors
            )
            # GPU preprocessing only: an image that failed to decode fails its own item.
            for index, error in rejected.items():
                if not runnable[index].future.done():
                    runnable[index].future.set_exception(error)
            runnable = [item for i, item in enumerate(runnable) if i not in rejected]
            if logits.shape[0] != len(runnable):
                raise RuntimeError(
                    f"engine returned {logits.shape[0]} rows for a batch of {len(runnable)}"
                )
        except Exception:
            logger.exception("%s: batch of %d failed", self._name, len(runnable))
            error = EngineError("the model failed on this batch; the error was logged")
            for item in runnable:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        except BaseException:
            # Cancelled mid-batch (forced shutdown): still answer everyone, then go.
            for item in runnable:
                if not item.future.done():
                    item.future.set_exception(ModelUnavailable("the server is shutting down"))
            raise
        finally:
            self._running_since = None
            self.last_batch_ms = time.time_ns() // 1_000_000
        inference_s = time.monotonic() - run_started
        self._observe.inference.observe(inference_s)
        self._observe.batch_size.observe(len(runnable))
        for item, row in zip(runnable, logits, strict=True):
            if not item.future.done():
                item.future.set_result(
                    ItemResult(row, started - item.enqueued_at, inference_s, len(runnable))
                )

    def _stack_and_run(
        self, tensors: list[Any]
    ) -> tuple[npt.NDArray[np.float32], dict[int, Exception]]:
        """In the engine thread: the copy into one batch stays off the event loop."""
        with self._turns.engine_turn():
            return self._collate_and_run(tensors)

    def _collate_and_run(
        self, tensors: list[Any]
    ) -> tuple[npt.NDArray[np.float32], dict[int, Exception]]:
        collated = self._collate(tensors)
        if len(collated.rejected) == len(tensors):
            return np.empty((0, 0), dtype=np.float32), collated.rejected
        return self.engine.run(collated.batch), collated.rejected

    def _fail_pending(self, error: Exception) -> None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(error)
