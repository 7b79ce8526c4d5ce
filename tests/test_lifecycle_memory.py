"""Swaps with real ONNX Runtime sessions under steady load: nothing lost, memory returned.

ResNet-18 (random weights, 47 MB artifact) is rolled from version 1 to 2, 3 and 4 while
two clients keep sending requests through the pool as the pipeline does. Every request
must be answered, and once the old versions are gone the process's RSS must be back
near its level before the first swap (each session holds ~50-100 MB, so a leak of one
would show). Run with ``-s`` for the figures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from service.metrics import Metrics
from service.pool import ModelPool
from service.repository import scan_repository
from service.settings import Settings
from tests.fakes import png

MODEL = "resnet18"
IMAGE = png((120, 140, 160), size=(64, 64))
#: RSS may end this far above its level before the swaps (allocator slack, caches).
RSS_SLACK_BYTES = 40 * 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def add_copy_of_version_1(root: Path, number: int) -> None:
    """A new version as an export publishes it: staged, then renamed into place."""
    staging = root / MODEL / f".staging-{number}"
    shutil.copytree(root / MODEL / "1", staging)
    info = json.loads((staging / "version.json").read_text())
    info["version"] = number
    (staging / "version.json").write_text(json.dumps(info))
    staging.rename(root / MODEL / str(number))


async def request(pool: ModelPool, log: list[tuple[float, float, int]]) -> None:
    started = time.monotonic()
    served = pool.get(MODEL)
    with served.require_batcher().reserve(1) as reservation:
        await asyncio.sleep(0)
        tensor = await asyncio.to_thread(served.preprocessor, IMAGE)
        (result,) = await reservation.submit([tensor], time.monotonic() + 30)
    assert result.logits.shape == (1000,)
    log.append((started, time.monotonic() - started, served.number))


def test_swaps_under_load_answer_every_request_and_return_the_old_memory(
    model_repository: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(model_repository, tmp_path / "models"))
    config = json.loads((root / MODEL / "config.json").read_text())
    (root / MODEL / "config.json").write_text(json.dumps({**config, "serve_latest": 1}))
    settings = Settings(
        repository=root,
        model_control_mode="explicit",
        admin_api_key="admin",
        intra_op_threads=1,
        max_batch_size=4,
        grpc_port=0,
    )
    pool = ModelPool(scan_repository(root), settings, Metrics())

    async def scenario() -> dict[str, float]:
        await pool.load()
        log: list[tuple[float, float, int]] = []
        failures: list[BaseException] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set() and len(log) < 2000:  # bounded either way
                try:
                    await request(pool, log)
                except Exception as exc:  # every failure is the finding
                    failures.append(exc)

        clients = [asyncio.create_task(client()) for _ in range(2)]
        await asyncio.sleep(1.0)
        gc.collect()
        before = rss_bytes()
        swap_windows = []
        for number in (2, 3, 4):
            add_copy_of_version_1(root, number)
            began = time.monotonic()
            result = await pool.load_model(MODEL)
            swap_windows.append((began, time.monotonic()))
            assert result.retired == (number - 1,)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*clients)
        gc.collect()
        after = rss_bytes()
        await pool.stop(5)
        assert failures == []
        during = [d for s, d, _ in log if any(a <= s <= b for a, b in swap_windows)]
        steady = [d for s, d, _ in log if not any(a <= s <= b for a, b in swap_windows)]
        assert {v for _, _, v in log} == {1, 2, 3, 4}
        return {
            "requests": len(log),
            "during_swaps": len(during),
            "p50_steady_ms": statistics.median(steady) * 1000,
            "max_steady_ms": max(steady) * 1000,
            "p50_swap_ms": statistics.median(during) * 1000 if during else 0.0,
            "max_swap_ms": max(during, default=0.0) * 1000,
            "swap_s": sum(b - a for a, b in swap_windows) / len(swap_windows),
            "rss_before_mib": before / 2**20,
            "rss_after_mib": after / 2**20,
        }

    figures = asyncio.run(scenario())
    print("\nswap figures:", {k: round(v, 1) for k, v in figures.items()})
    assert figures["rss_after_mib"] * 2**20 <= figures["rss_before_mib"] * 2**20 + RSS_SLACK_BYTES
