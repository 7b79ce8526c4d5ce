"""Process-wide memory budgets: the admit stage's bounds on what clients can make us hold.

Two budgets bound peak memory whatever clients send (docs/LIMITS.md):

* **body bytes** in flight: request bodies being read or waiting to be decoded. Taken
  from ``Content-Length`` before a byte is read, or chunk by chunk while a body of
  unknown length streams in. A full budget refuses at once (503 + Retry-After): a
  client cannot make the server wait for memory it does not have.
* **decode bytes** in flight: images being decoded in the decode threads, each
  weighted by the peak memory its decode may take, bounded from its header
  (:attr:`service.preprocess.OpenedImage.cost_bytes`). Taken after the header is read,
  before the pixels are decoded; a decode waits (bounded by its request's deadline)
  for room, because the work ahead of it frees room in milliseconds.

:class:`Budget` is a weighted semaphore usable from both sides: ``try_take`` from any
thread (the decode threads take their own room when it is free, without a hop back to
the event loop), ``take`` awaits on the event loop, ``give`` from any thread. Every
holder gives back in a ``finally``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

from service.errors import DeadlineExceeded


class Budget:
    """``capacity`` bytes shared by every request of the process."""

    def __init__(self, name: str, capacity: int, *, on_change: Callable[[int], None]) -> None:
        if capacity < 1:
            raise ValueError(f"{name} budget must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._on_change = on_change

    @property
    def used(self) -> int:
        return self._used

    def try_take(self, amount: int) -> bool:
        """Take ``amount`` if it fits now; never waits. Safe from any thread."""
        if amount > self.capacity:
            return False
        with self._lock:
            if self._used + amount > self.capacity:
                return False
            self._used += amount
            used = self._used
        self._on_change(used)
        return True

    async def take(self, amount: int, deadline: float) -> None:
        """Wait (on the event loop) until ``amount`` fits, at most until ``deadline``.

        Raises :class:`DeadlineExceeded` when the deadline passes first. ``amount`` above
        the capacity never fits: settings validation refuses a budget smaller than one
        maximal image, so that is a bug, reported as a ValueError.
        """
        if amount > self.capacity:
            raise ValueError(f"{amount} exceeds the whole {self.name} budget ({self.capacity})")
        loop = asyncio.get_running_loop()
        while not self.try_take(amount):
            waiter: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._used + amount <= self.capacity:
                    continue  # room appeared between the check and the registration
                self._waiters.append((loop, waiter))
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(waiter, max(remaining, 0.0))
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request's deadline passed while waiting for {self.name} budget "
                    f"(capacity {self.capacity}, in use {self._used})"
                ) from None
            finally:
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))

    def give(self, amount: int) -> None:
        """Return ``amount``; wakes every waiter (each re-checks). Safe from any thread."""
        with self._lock:
            self._used -= amount
            used = self._used
            waiters = list(self._waiters)
            self._waiters.clear()
        self._on_change(used)
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
