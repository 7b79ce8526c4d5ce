"""CPU engines and decodes take turns on the cores (service/batching/turns.py).

Ordering is driven by events and bounded waits, never by sleeps that must be long enough:
each test states what must (or must not) have happened while the other side was held.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from service.batching import Batcher, BatcherConfig
from service.batching.turns import CpuTurns, runs_on_cpu
from service.metrics import Metrics
from service.pipeline.lanes import DecodeLanes
from service.settings import Settings
from tests.fakes import FakeEngine, engine_busy, until

WAIT_S = 10.0
#: Long enough for a thread that is free to run to have run (only asserted "not yet").
SETTLE_S = 0.2


@pytest.fixture
def turns() -> CpuTurns:
    return CpuTurns(enabled=True, max_wait_s=WAIT_S)


@pytest.fixture
def lanes(turns: CpuTurns) -> Iterator[DecodeLanes]:
    lanes = DecodeLanes(threads=2, heavy_threads=1, heavy_work=1000, turns=turns)
    yield lanes
    lanes.shutdown(wait=True, cancel_futures=True)


def test_a_decode_waits_while_a_cpu_batch_runs_and_starts_when_it_ends(
    turns: CpuTurns, lanes: DecodeLanes
) -> None:
    started = threading.Event()
    with turns.engine_turn():
        decode = lanes.submit(started.set, heavy=False)
        assert not started.wait(SETTLE_S)
    decode.result(timeout=WAIT_S)
    assert started.is_set()


def test_a_heavy_decode_takes_no_turns(turns: CpuTurns, lanes: DecodeLanes) -> None:
    """Its lane has one thread: holding it for a batch would leave a core idle."""
    with turns.engine_turn():
        assert lanes.submit(lambda: "heavy", heavy=True).result(timeout=WAIT_S) == "heavy"


def test_cpu_batches_of_two_models_never_overlap(turns: CpuTurns) -> None:
    inside = threading.Event()
    second_in = threading.Event()
    release = threading.Event()

    def first() -> None:
        with turns.engine_turn():
            inside.set()
            assert release.wait(WAIT_S)

    def second() -> None:
        with turns.engine_turn():
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(WAIT_S)
    threads[1].start()
    assert not second_in.wait(SETTLE_S)
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert second_in.is_set()


def test_a_batch_waits_for_the_decodes_in_flight_and_no_longer() -> None:
    async def scenario() -> None:
        turns = CpuTurns(enabled=True, max_wait_s=WAIT_S)
        await asyncio.wait_for(turns.decodes_settled(), WAIT_S)  # nothing decoding: at once
        turns.decode_submitted()
        turns.decode_submitted()
        waiting = asyncio.create_task(turns.decodes_settled())
        turns.decode_finished()
        await asyncio.sleep(0)
        assert not waiting.done()
        turns.decode_finished()
        await asyncio.wait_for(waiting, WAIT_S)
        assert turns.decoding == 0

    asyncio.run(scenario())


def test_a_decode_that_never_finishes_holds_a_batch_only_for_the_wait() -> None:
    async def scenario() -> None:
        turns = CpuTurns(enabled=True, max_wait_s=0.05)
        turns.decode_submitted()
        started = time.monotonic()
        await asyncio.wait_for(turns.decodes_settled(), WAIT_S)
        assert time.monotonic() - started < WAIT_S / 2

    asyncio.run(scenario())


def test_turned_off_nothing_waits() -> None:
    async def scenario() -> None:
        turns = CpuTurns(enabled=False, max_wait_s=WAIT_S)
        turns.decode_submitted()
        await asyncio.wait_for(turns.decodes_settled(), 1.0)
        with turns.engine_turn():
            done = threading.Event()
            threading.Thread(target=lambda: (turns.wait_for_engines(), done.set())).start()
            assert done.wait(WAIT_S)

    asyncio.run(scenario())


def test_images_decoding_when_the_engine_frees_up_join_the_next_batch() -> None:
    """The batch after a running one holds the queued image and the one still decoding,
    not the queued one alone (the decode would then wait a whole batch)."""

    async def scenario() -> None:
        turns = CpuTurns(enabled=True, max_wait_s=WAIT_S)
        engine = FakeEngine(fail_above=np.inf)
        engine.gate.clear()
        config = BatcherConfig(max_batch_size=8, max_queue_delay_ms=0.0, max_queue_size=64)
        batcher = Batcher(engine, config, Metrics(), ("fake", "1"), turns=turns)
        batcher.start()

        async def classify(value: float) -> None:
            with batcher.reserve(1) as reservation:
                tensor = np.full((3, 2, 2), value, dtype=np.float32)
                await reservation.submit([tensor], time.monotonic() + WAIT_S)

        first = asyncio.create_task(classify(1.0))
        await engine_busy(engine)
        queued = asyncio.create_task(classify(2.0))
        turns.decode_submitted()  # a third image is being decoded
        engine.gate.set()
        await first
        await asyncio.sleep(SETTLE_S)
        assert len(engine.batches) == 1  # the second batch waits for the decode
        decoded = asyncio.create_task(classify(3.0))
        await until(lambda: batcher.queued == 2)
        turns.decode_finished()
        await asyncio.wait_for(asyncio.gather(queued, decoded), WAIT_S)
        assert engine.batches == [[1.0], [2.0, 3.0]]
        await batcher.stop(5)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("mode", "intra_op_threads", "expected"),
    [("auto", 0, True), ("auto", 1, None), ("on", 1, True), ("off", 0, False)],
)
def test_auto_takes_turns_when_the_engine_threads_cover_every_core(
    mode: str, intra_op_threads: int, expected: bool | None
) -> None:
    settings = Settings(cpu_turns=mode, intra_op_threads=intra_op_threads)  # type: ignore[arg-type]
    if expected is None:  # one intra-op thread covers every core only on a 1-core machine
        expected = settings.usable_cores() <= 1
    assert settings.cpu_turns_enabled() is expected


def test_only_engines_on_the_cpu_take_turns() -> None:
    assert runs_on_cpu("CPUExecutionProvider") and runs_on_cpu("cpu")
    assert not runs_on_cpu("CUDAExecutionProvider") and not runs_on_cpu("cuda:0")


def test_waits_that_happened_are_observed_by_side() -> None:
    metrics = Metrics()
    turns = CpuTurns(enabled=True, max_wait_s=WAIT_S, waits=metrics.cpu_turn_wait)

    def count(side: str) -> float:
        value = metrics.registry.get_sample_value(
            "resnet_serve_cpu_turn_wait_seconds_count", {"side": side}
        )
        return value or 0.0

    turns.wait_for_engines()  # no batch running: no wait, nothing observed
    with turns.engine_turn():
        waiter = threading.Thread(target=turns.wait_for_engines)
        waiter.start()
        waiter.join(SETTLE_S)
    waiter.join(WAIT_S)
    assert count("decode") == 1

    async def batch_side() -> None:
        await turns.decodes_settled()  # nothing decoding: not observed
        turns.decode_submitted()
        waiting = asyncio.create_task(turns.decodes_settled())
        await asyncio.sleep(0)
        turns.decode_finished()
        await asyncio.wait_for(waiting, WAIT_S)

    asyncio.run(batch_side())
    assert count("batch") == 1
