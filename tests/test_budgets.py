"""The weighted budgets (service/budgets.py): never over capacity, waits bounded, wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.budgets import Budget
from service.errors import DeadlineExceeded


def make(capacity: int) -> tuple[Budget, list[int]]:
    seen: list[int] = []
    return Budget("test units", capacity, on_change=seen.append), seen


def test_try_take_never_exceeds_capacity_and_reports_use() -> None:
    budget, seen = make(10)
    assert budget.try_take(6)
    assert not budget.try_take(5)
    assert budget.try_take(4)
    assert not budget.try_take(1)
    budget.give(10)
    assert not budget.try_take(11)  # more than the whole budget never fits
    assert budget.used == 0
    assert seen == [6, 10, 0]


def test_threads_taking_and_giving_never_overcommit() -> None:
    budget, _ = make(5)
    peak = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak
        for _ in range(500):
            if budget.try_take(2):
                with lock:
                    peak = max(peak, budget.used)
                budget.give(2)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak <= 5
    assert budget.used == 0


def test_waiter_is_woken_by_a_give_from_another_thread() -> None:
    async def scenario() -> None:
        budget, _ = make(4)
        assert budget.try_take(3)
        waiting = asyncio.create_task(budget.take(2, time.monotonic() + 5))
        await asyncio.sleep(0)  # the waiter registers
        assert not waiting.done()
        await asyncio.to_thread(budget.give, 3)
        await asyncio.wait_for(waiting, 5)
        assert budget.used == 2

    asyncio.run(scenario())


def test_wait_past_the_deadline_is_a_504_and_takes_nothing() -> None:
    async def scenario() -> None:
        budget, _ = make(4)
        assert budget.try_take(4)
        with pytest.raises(DeadlineExceeded):
            await budget.take(1, time.monotonic() + 0.05)
        budget.give(4)
        assert budget.used == 0
        with pytest.raises(ValueError):
            await budget.take(5, time.monotonic() + 1)

    asyncio.run(scenario())


def test_cancelled_waiter_takes_nothing() -> None:
    async def scenario() -> None:
        budget, _ = make(1)
        assert budget.try_take(1)
        waiting = asyncio.create_task(budget.take(1, time.monotonic() + 5))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        budget.give(1)
        assert budget.used == 0

    asyncio.run(scenario())
