"""Expensive decodes run in their own lane: cheap images never wait behind them."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from PIL import Image

from service.pipeline.lanes import DecodeLanes
from service.preprocess import OpenedImage
from service.settings import Settings

#: How long a test waits for something that should happen at once (never a sync sleep).
WAIT_S = 10.0


def gate() -> tuple[threading.Event, threading.Event, Callable[[], str]]:
    """A job that reports it started, then blocks until opened."""
    started, opened = threading.Event(), threading.Event()

    def job() -> str:
        started.set()
        assert opened.wait(WAIT_S)
        return "heavy done"

    return started, opened, job


@pytest.fixture
def lanes() -> Iterator[DecodeLanes]:
    lanes = DecodeLanes(threads=2, heavy_threads=1, heavy_work=1000)
    yield lanes
    lanes.shutdown(wait=True, cancel_futures=True)


def opened_with(work: int) -> OpenedImage:
    return OpenedImage(Image.new("RGB", (1, 1)), "PNG", 1, 0, work)


def test_heaviness_is_work_above_the_threshold(lanes: DecodeLanes) -> None:
    assert not lanes.is_heavy(opened_with(1000))
    assert lanes.is_heavy(opened_with(1001))


def test_cheap_jobs_complete_while_the_heavy_lane_is_saturated(lanes: DecodeLanes) -> None:
    started, opened, job = gate()
    running = lanes.submit(job, heavy=True)
    assert started.wait(WAIT_S)
    queued = [lanes.submit(lambda: "late heavy", heavy=True) for _ in range(5)]
    cheap = [lanes.submit(lambda i=i: i * i, heavy=False) for i in range(20)]
    assert [f.result(timeout=WAIT_S) for f in cheap] == [i * i for i in range(20)]
    assert not running.done() and not any(f.done() for f in queued)
    opened.set()
    assert running.result(timeout=WAIT_S) == "heavy done"
    assert [f.result(timeout=WAIT_S) for f in queued] == ["late heavy"] * 5


def test_heavy_jobs_use_only_their_own_threads(lanes: DecodeLanes) -> None:
    """However many heavy jobs wait, both cheap threads stay free (two at once run)."""
    started, opened, job = gate()
    lanes.submit(job, heavy=True)
    assert started.wait(WAIT_S)
    for _ in range(10):
        lanes.submit(job, heavy=True)
    both = threading.Barrier(2, timeout=WAIT_S)  # passes only if two cheap jobs run at once
    cheap = [lanes.submit(both.wait, heavy=False) for _ in range(2)]
    assert sorted(f.result(timeout=WAIT_S) for f in cheap) == [0, 1]
    opened.set()


def test_a_job_cancelled_before_it_starts_never_runs(lanes: DecodeLanes) -> None:
    started, opened, job = gate()
    lanes.submit(job, heavy=True)
    assert started.wait(WAIT_S)
    ran = threading.Event()
    waiting = lanes.submit(ran.set, heavy=True)
    assert waiting.cancel()
    opened.set()
    lanes.shutdown(wait=True)
    assert waiting.cancelled() and not ran.is_set()
    with pytest.raises(CancelledError):
        waiting.result()


def test_shutdown_cancels_queued_jobs_in_both_lanes_and_lets_running_ones_finish() -> None:
    lanes = DecodeLanes(threads=1, heavy_threads=1, heavy_work=0)
    gates = {heavy: gate() for heavy in (False, True)}
    running = {heavy: lanes.submit(g[2], heavy=heavy) for heavy, g in gates.items()}
    for started, _, _ in gates.values():
        assert started.wait(WAIT_S)
    ran = threading.Event()
    queued = [lanes.submit(ran.set, heavy=heavy) for heavy in (False, True)]
    lanes.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    for _, opened, _ in gates.values():
        opened.set()
    lanes.shutdown(wait=True)
    assert [f.result(timeout=WAIT_S) for f in running.values()] == ["heavy done"] * 2
    assert not ran.is_set()
    with pytest.raises(RuntimeError):
        lanes.submit(ran.set, heavy=False)


def test_lanes_are_built_from_settings() -> None:
    settings = Settings(decode_threads=3, heavy_decode_threads=1, heavy_decode_work=12345)
    lanes = DecodeLanes.from_settings(settings)
    try:
        assert lanes.heavy_work == 12345
        assert (
            lanes.submit(lambda: threading.current_thread().name, heavy=True)
            .result(timeout=WAIT_S)
            .startswith("decode-heavy")
        )
    finally:
        lanes.shutdown()


def test_a_lane_without_threads_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        DecodeLanes(threads=2, heavy_threads=0, heavy_work=1)


def own_os_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_each_lane_names_its_threads_in_the_os(lanes: DecodeLanes) -> None:
    """top -H and benchmarks.threads tell decode threads apart by these names."""
    cheap = lanes.submit(own_os_name, heavy=False).result(timeout=WAIT_S)
    heavy = lanes.submit(own_os_name, heavy=True).result(timeout=WAIT_S)
    assert (cheap, heavy) == ("decode_0", "decode-heavy_0")
