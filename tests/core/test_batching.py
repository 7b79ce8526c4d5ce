"""The dynamic batcher with a fake engine: batching, ordering, admission, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Batcher, BatcherConfig
from service.errors import DeadlineExceeded, EngineError, ModelUnavailable, Overloaded
from service.metrics import Metrics


class EchoEngine:
    """Logits = the first pixel of each image, so every answer is traceable to its input."""

    name = "fake"
    provider = "test"

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.batches: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.release.wait(10)
        time.sleep(self.delay_s)
        self.batches.append(batch.shape[0])
        if self.fail_on is not None and np.any(batch[:, 0, 0, 0] == self.fail_on):
            raise RuntimeError("boom")
        return np.stack([batch[:, 0, 0, 0], -batch[:, 0, 0, 0]], axis=1)

    def warmup(self, batch_sizes: tuple[int, ...]) -> None:
        pass

    def close(self) -> None:
        pass


def image(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, dtype=np.float32)


def make_batcher(engine: EchoEngine, **overrides: float) -> Batcher:
    config = BatcherConfig(
        max_batch_size=int(overrides.get("max_batch_size", 8)),
        max_queue_delay_ms=float(overrides.get("max_queue_delay_ms", 0.0)),
        max_queue_size=int(overrides.get("max_queue_size", 64)),
    )
    return Batcher(engine, config, Metrics(), ("fake", "1"))


async def classify(batcher: Batcher, values: list[float], timeout_s: float = 10.0) -> list[float]:
    with batcher.reserve(len(values)) as reservation:
        results = await reservation.submit([image(v) for v in values], time.monotonic() + timeout_s)
    return [float(r.logits[0]) for r in results]


def test_concurrent_requests_form_batches_and_get_their_own_answers() -> None:
    async def scenario() -> None:
        engine = EchoEngine(delay_s=0.02)
        batcher = make_batcher(engine)
        batcher.start()
        answers = await asyncio.gather(*(classify(batcher, [i, i + 0.5]) for i in range(12)))
        assert answers == [[i, i + 0.5] for i in range(12)]
        assert max(engine.batches) > 2, engine.batches
        assert all(size <= 8 for size in engine.batches)
        await batcher.stop(5)

    asyncio.run(scenario())


def test_lone_request_does_not_wait_for_the_queue_delay() -> None:
    async def scenario() -> float:
        batcher = make_batcher(EchoEngine(), max_queue_delay_ms=1000)
        batcher.start()
        await classify(batcher, [1.0])  # first call pays task start-up
        started = time.perf_counter()
        await classify(batcher, [2.0])
        elapsed = time.perf_counter() - started
        await batcher.stop(5)
        return elapsed

    # Nothing else is being decoded, so the 1 s top-up window must not be used.
    assert asyncio.run(scenario()) < 0.5


def test_queue_delay_tops_up_with_images_still_being_decoded() -> None:
    async def scenario() -> list[int]:
        engine = EchoEngine()
        batcher = make_batcher(engine, max_queue_delay_ms=500)
        batcher.start()
        late = batcher.reserve(1)  # a request still decoding its image

        async def arrive_later() -> list[float]:
            await asyncio.sleep(0.05)
            results = await late.submit([image(7.0)], time.monotonic() + 5)
            return [float(r.logits[0]) for r in results]

        first, second = await asyncio.gather(classify(batcher, [1.0]), arrive_later())
        assert (first, second) == ([1.0], [7.0])
        await batcher.stop(5)
        return engine.batches

    assert asyncio.run(scenario()) == [2]


def test_full_queue_is_refused_at_once_without_running_anything() -> None:
    async def scenario() -> None:
        engine = EchoEngine()
        batcher = make_batcher(engine, max_queue_size=4)
        held = batcher.reserve(3)
        with pytest.raises(Overloaded) as info:
            batcher.reserve(2)
        assert info.value.status == 503
        assert info.value.headers["Retry-After"] == "1"
        held.__exit__(None, None, None)  # released room can be reserved again
        batcher.reserve(4).__exit__(None, None, None)
        assert engine.batches == []

    asyncio.run(scenario())


def test_expired_images_are_answered_504_and_not_run() -> None:
    async def scenario() -> None:
        engine = EchoEngine()
        engine.release.clear()  # the engine is busy with a first batch
        batcher = make_batcher(engine)
        batcher.start()
        busy = asyncio.create_task(classify(batcher, [1.0]))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(classify(batcher, [2.0], timeout_s=0.05))
        await asyncio.sleep(0.2)
        engine.release.set()
        assert await busy == [1.0]
        with pytest.raises(DeadlineExceeded):
            await late
        assert engine.batches == [1]  # the expired image never reached the engine
        await batcher.stop(5)

    asyncio.run(scenario())


def test_engine_failure_fails_only_its_batch() -> None:
    async def scenario() -> None:
        engine = EchoEngine(fail_on=13.0)
        batcher = make_batcher(engine)
        batcher.start()
        with pytest.raises(EngineError):
            await classify(batcher, [13.0])
        assert await classify(batcher, [4.0]) == [4.0]
        await batcher.stop(5)

    asyncio.run(scenario())


def test_stop_drains_accepted_work_then_refuses_new_work() -> None:
    async def scenario() -> None:
        engine = EchoEngine(delay_s=0.05)
        batcher = make_batcher(engine, max_batch_size=1)
        batcher.start()
        pending = [asyncio.create_task(classify(batcher, [float(i)])) for i in range(5)]
        await asyncio.sleep(0.01)
        await batcher.stop(10)
        assert [await p for p in pending] == [[float(i)] for i in range(5)]
        with pytest.raises(ModelUnavailable):
            batcher.reserve(1)

    asyncio.run(scenario())
