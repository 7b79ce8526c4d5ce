"""The batcher under faults, with a fake engine: stalls, failing batches, full queues.

Ordering is driven by the engine's gate and events, never by timing asserts: each test
states what must have happened *while the engine was still held*.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from service.batching import Batcher, BatcherConfig
from service.errors import DeadlineExceeded, EngineError, ModelUnavailable, Overloaded
from service.metrics import Metrics
from tests.reliability.fakes import FakeEngine


def tensor(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, dtype=np.float32)


def make_batcher(
    engine: FakeEngine, *, max_batch_size: int = 8, max_queue_size: int = 16
) -> Batcher:
    config = BatcherConfig(
        max_batch_size=max_batch_size, max_queue_delay_ms=0.0, max_queue_size=max_queue_size
    )
    return Batcher(engine, config, Metrics(), ("fake", "1"))


async def classify(batcher: Batcher, values: list[float], timeout_s: float = 10.0) -> list[float]:
    with batcher.reserve(len(values)) as reservation:
        results = await reservation.submit(
            [tensor(v) for v in values], time.monotonic() + timeout_s
        )
    return [float(r.logits[0]) for r in results]


async def engine_busy(engine: FakeEngine) -> None:
    """Wait (bounded) until a batch is inside the engine."""
    await asyncio.wait_for(asyncio.to_thread(engine.started.wait, 5), 6)
    assert engine.started.is_set()


def test_deadline_is_answered_504_while_the_engine_is_still_stuck() -> None:
    """A client's deadline is kept even when the batch ahead of it never ends."""

    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine)
        batcher.start()
        stuck = asyncio.create_task(classify(batcher, [0.1]))
        await engine_busy(engine)
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(classify(batcher, [0.2], timeout_s=0.1), 10)
        assert not engine.gate.is_set()  # answered before the engine came back
        engine.gate.set()
        assert await stuck == [pytest.approx(0.1)]
        await batcher.stop(5)
        # The expired image was never run: only the first batch reached the engine.
        assert engine.batches == [[pytest.approx(0.1)]]

    asyncio.run(scenario())


def test_failing_batch_fails_all_its_requests_and_the_next_batch_runs() -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine)
        batcher.start()
        first = asyncio.create_task(classify(batcher, [0.0]))
        await engine_busy(engine)
        # These two queue up behind the held batch and so share the next batch.
        bad = asyncio.create_task(classify(batcher, [2.0]))
        innocent = asyncio.create_task(classify(batcher, [0.3]))
        await asyncio.sleep(0.05)
        engine.gate.set()
        assert await first == [0.0]
        for task in (bad, innocent):
            with pytest.raises(EngineError) as info:
                await task
            assert info.value.status == 500
            assert "marked input" not in info.value.message  # internals stay in the log
        assert await classify(batcher, [0.4]) == [pytest.approx(0.4)]
        assert [len(b) for b in engine.batches] == [1, 2, 1]
        await batcher.stop(5)

    asyncio.run(scenario())


def test_full_queue_refuses_at_once_and_accepted_work_still_completes() -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine, max_batch_size=2, max_queue_size=4)
        batcher.start()
        accepted = [asyncio.create_task(classify(batcher, [0.0]))]
        await engine_busy(engine)
        # Fill the queue behind the held batch to exactly its limit.
        free = batcher.config.max_queue_size - batcher.queued
        accepted += [asyncio.create_task(classify(batcher, [i / 10])) for i in range(1, free + 1)]
        await asyncio.sleep(0.05)
        assert batcher.queued == batcher.config.max_queue_size
        refused = 0
        for _ in range(10):
            with pytest.raises(Overloaded) as info:
                batcher.reserve(1)
            assert info.value.headers["Retry-After"].isdigit()
            refused += 1
        engine.gate.set()
        answers = await asyncio.gather(*accepted)
        assert answers == [[pytest.approx(i / 10)] for i in range(len(accepted))]
        assert refused == 10
        assert sum(len(b) for b in engine.batches) == len(accepted)  # refused work never ran
        await batcher.stop(5)

    asyncio.run(scenario())


def test_cancelled_client_images_are_not_run() -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine)
        batcher.start()
        first = asyncio.create_task(classify(batcher, [0.1]))
        await engine_busy(engine)
        gone = asyncio.create_task(classify(batcher, [0.5, 0.6]))
        await asyncio.sleep(0.05)
        gone.cancel()  # the client disconnected while queued
        engine.gate.set()
        assert await first == [pytest.approx(0.1)]
        assert await classify(batcher, [0.7]) == [pytest.approx(0.7)]
        assert engine.batches == [[pytest.approx(0.1)], [pytest.approx(0.7)]]
        await batcher.stop(5)

    asyncio.run(scenario())


def test_drain_timeout_answers_every_queued_request() -> None:
    """Past the drain timeout nothing is left hanging: queued requests get a 503."""

    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine, max_batch_size=1)
        batcher.start()
        running = asyncio.create_task(classify(batcher, [0.1]))
        await engine_busy(engine)
        queued = asyncio.create_task(classify(batcher, [0.2]))
        await asyncio.sleep(0.05)
        await batcher.stop(0.2)
        for task in (running, queued):
            with pytest.raises(ModelUnavailable):
                await asyncio.wait_for(task, 5)
        engine.gate.set()

    asyncio.run(scenario())
