"""The dynamic batcher (service/batching.py) with the fake engine.

Ordering is driven by the engine's gate and events and by waiting on ``batcher.queued``
(bounded), never by sleeps: each test states what must have happened *while the engine
was still held*.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.batching import Batcher, BatcherConfig
from service.errors import DeadlineExceeded, EngineError, ModelUnavailable, Overloaded
from service.metrics import Metrics
from tests.fakes import FakeEngine, engine_busy, until


def tensor(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, dtype=np.float32)


def make_batcher(engine: FakeEngine, **overrides: float) -> Batcher:
    config = BatcherConfig(
        max_batch_size=int(overrides.get("max_batch_size", 8)),
        max_queue_delay_ms=float(overrides.get("max_queue_delay_ms", 0.0)),
        max_queue_size=int(overrides.get("max_queue_size", 64)),
    )
    return Batcher(engine, config, Metrics(), ("fake", "1"))


async def classify(batcher: Batcher, values: list[float], timeout_s: float = 10.0) -> list[float]:
    with batcher.reserve(len(values)) as reservation:
        results = await reservation.submit(
            [tensor(v) for v in values], time.monotonic() + timeout_s
        )
    return [float(r.logits[0]) for r in results]


def test_concurrent_requests_form_batches_and_get_their_own_answers() -> None:
    async def scenario() -> None:
        engine = FakeEngine(fail_above=np.inf)
        engine.gate.clear()
        batcher = make_batcher(engine)
        batcher.start()
        first = asyncio.create_task(classify(batcher, [100.0]))
        await engine_busy(engine)
        rest = [asyncio.create_task(classify(batcher, [i, i + 0.5])) for i in range(12)]
        await until(lambda: batcher.queued == 24)
        engine.gate.set()
        assert await first == [100.0]
        assert [await r for r in rest] == [[i, i + 0.5] for i in range(12)]
        assert [len(b) for b in engine.batches] == [1, 8, 8, 8]
        await batcher.stop(5)

    asyncio.run(scenario())


class NameRecordingEngine(FakeEngine):
    """Records the OS name of the thread each batch runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.os_names: list[str] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        comm = Path(f"/proc/self/task/{threading.get_native_id()}/comm")
        self.os_names.append(comm.read_text().strip())
        return super().run(batch)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_engine_thread_carries_the_models_name_in_the_os() -> None:
    """top -H and benchmarks.threads tell a model's engine thread apart by it."""

    async def scenario() -> list[str]:
        engine = NameRecordingEngine()
        batcher = make_batcher(engine)
        batcher.start()
        await classify(batcher, [1.0])
        await batcher.stop(5)
        return engine.os_names

    assert asyncio.run(scenario()) == ["engine-fake:1_0"]


def test_config_is_frozen() -> None:
    config = BatcherConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=1)
    with pytest.raises(AttributeError):
        config.max_batch_size = 2  # type: ignore[misc]


def test_lone_request_does_not_wait_for_the_queue_delay() -> None:
    async def scenario() -> float:
        batcher = make_batcher(FakeEngine(), max_queue_delay_ms=1000)
        batcher.start()
        await classify(batcher, [1.0])  # first call pays task start-up
        started = time.perf_counter()
        await classify(batcher, [0.5])
        elapsed = time.perf_counter() - started
        await batcher.stop(5)
        return elapsed

    # Nothing else is being decoded, so the 1 s top-up window must not be used.
    assert asyncio.run(scenario()) < 0.5


def test_queue_delay_tops_up_with_images_still_being_decoded() -> None:
    async def scenario() -> list[int]:
        engine = FakeEngine()
        batcher = make_batcher(engine, max_queue_delay_ms=2000)
        batcher.start()
        late = batcher.reserve(1)  # a request still decoding its image
        early = batcher.reserve(1)
        first = asyncio.create_task(early.submit([tensor(1.0)], time.monotonic() + 5))
        # Submitted, and taken by the worker, which now tops up while `late` decodes.
        await until(lambda: not early.open and batcher.queued == 0)
        results = await late.submit([tensor(0.7)], time.monotonic() + 5)
        assert [float(r.logits[0]) for r in await first] == [1.0]
        assert [float(r.logits[0]) for r in results] == [pytest.approx(0.7)]
        await batcher.stop(5)
        return [len(b) for b in engine.batches]

    assert asyncio.run(scenario()) == [2]


def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        batcher = make_batcher(engine, max_queue_size=4)
        held = batcher.reserve(3)
        with pytest.raises(Overloaded) as info:
            batcher.reserve(2)
        assert info.value.status == 503
        assert info.value.retry_after_s == 1
        held.release()  # released room can be reserved again
        batcher.reserve(4).release()
        assert engine.batches == []

    asyncio.run(scenario())


def test_reservation_grows_only_into_free_room_and_shrinks_back() -> None:
    async def scenario() -> None:
        batcher = make_batcher(FakeEngine(), max_queue_size=4)
        first = batcher.reserve(1)
        other = batcher.reserve(2)
        with pytest.raises(Overloaded):
            first.resize(3)  # 1 + 2 + 2 more > 4
        first.resize(2)
        with pytest.raises(Overloaded):
            batcher.reserve(1)
        other.resize(1)
        batcher.reserve(1).release()
        first.release()
        other.release()
        batcher.reserve(4).release()

    asyncio.run(scenario())


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
        assert batcher.queued == 0  # and it stopped counting against the queue at once
        assert batcher.batch_age_s() > 0  # the stuck batch is visible
        engine.gate.set()
        assert await stuck == [pytest.approx(0.1)]
        await batcher.stop(5)
        # The expired image was never run: only the first batch reached the engine.
        assert engine.batches == [[pytest.approx(0.1)]]
        assert batcher.batch_age_s() == 0.0

    asyncio.run(scenario())


def test_expired_and_cancelled_items_free_queue_room_before_the_worker_pops_them() -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine, max_queue_size=4)
        batcher.start()
        first = asyncio.create_task(classify(batcher, [0.1]))
        await engine_busy(engine)
        doomed = [asyncio.create_task(classify(batcher, [0.2, 0.3])) for _ in range(2)]
        await until(lambda: batcher.queued == 4)
        with pytest.raises(Overloaded):
            batcher.reserve(1)
        for task in doomed:
            task.cancel()  # the clients hung up while queued
        await until(lambda: batcher.queued == 0)
        later = asyncio.create_task(classify(batcher, [0.4, 0.5, 0.6, 0.7]))  # fits again
        await until(lambda: batcher.queued == 4)
        engine.gate.set()
        assert await first == [pytest.approx(0.1)]
        assert await later == [pytest.approx(v) for v in (0.4, 0.5, 0.6, 0.7)]
        # The cancelled images never ran.
        assert [len(b) for b in engine.batches] == [1, 4]
        await batcher.stop(5)

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
        await until(lambda: batcher.queued == 2)
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


def test_full_queue_refuses_and_accepted_work_still_completes() -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        engine.gate.clear()
        batcher = make_batcher(engine, max_batch_size=2, max_queue_size=4)
        batcher.start()
        accepted = [asyncio.create_task(classify(batcher, [0.0]))]
        await engine_busy(engine)
        accepted += [asyncio.create_task(classify(batcher, [i / 10])) for i in range(1, 5)]
        await until(lambda: batcher.queued == 4)
        with pytest.raises(Overloaded):
            batcher.reserve(1)
        engine.gate.set()
        answers = await asyncio.gather(*accepted)
        assert answers == [[pytest.approx(i / 10)] for i in range(5)]
        assert sum(len(b) for b in engine.batches) == 5  # refused work never ran
        await batcher.stop(5)

    asyncio.run(scenario())


def test_stop_drains_accepted_work_then_refuses_new_work() -> None:
    async def scenario() -> None:
        engine = FakeEngine(delay_s=0.02)
        batcher = make_batcher(engine, max_batch_size=1)
        batcher.start()
        pending = [asyncio.create_task(classify(batcher, [i / 10])) for i in range(5)]
        await until(lambda: engine.started.is_set())
        await batcher.stop(10)
        assert [await p for p in pending] == [[pytest.approx(i / 10)] for i in range(5)]
        with pytest.raises(ModelUnavailable):
            batcher.reserve(1)

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
        await until(lambda: batcher.queued == 1)
        await batcher.stop(0.2)
        for task in (running, queued):
            with pytest.raises(ModelUnavailable):
                await asyncio.wait_for(task, 5)
        engine.gate.set()

    asyncio.run(scenario())
