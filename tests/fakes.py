"""The one fake engine, and the real app in-process over it (lifespan included).

The fake implements :class:`service.engines.base.Engine`; its logits are each image's
channel-0 mean (and its negation), so every answer is traceable to its input. It fails
any batch holding an image whose mean is above ``fail_above`` (a white image after
normalisation), and ``gate`` holds every batch until the test opens it (bounded, so
nothing can hang). Tests order events by ``started``/``gate`` and :func:`until`,
never by sleeping.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from fastapi import FastAPI
from PIL import Image

from service.app import create_app
from service.metrics import Metrics
from service.pool import ModelPool
from service.repository import (
    ArtifactInfo,
    ModelConfig,
    ModelEntry,
    ModelVersion,
    Preprocessing,
    VersionInfo,
    WeightsInfo,
)
from service.settings import Settings

#: mean=0.5, std=0.25: white normalises to +2.0, black to -2.0.
FAIL_ABOVE = 1.9
GATE_TIMEOUT_S = 20.0


class FakeEngine:
    """Engine protocol: ``run`` blocks on ``gate``, fails on marked images, logs batches."""

    name = "onnxruntime"
    provider = "FakeProvider"

    def __init__(self, *, fail_above: float = FAIL_ABOVE, delay_s: float = 0.0) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()  # set when a batch reaches the engine
        self.batches: list[list[float]] = []
        self.fail_above = fail_above
        self.delay_s = delay_s
        self.closed = False

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.started.set()
        self.gate.wait(GATE_TIMEOUT_S)
        if self.delay_s:
            time.sleep(self.delay_s)
        means = batch[:, 0].mean(axis=(1, 2))
        self.batches.append([float(m) for m in means])
        if np.any(means > self.fail_above):
            raise RuntimeError("fake engine: marked input in this batch")
        return np.stack([means, -means], axis=1).astype(np.float32)

    def warmup(self, max_batch_size: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def fake_entry(folder: Path, name: str = "fake") -> ModelEntry:
    """A model entry whose (never opened) artifact is declared but absent on disk."""
    config = ModelConfig(
        name=name,
        architecture="fake",
        labels=("bright", "dark"),
        preprocessing=Preprocessing(resize_size=8, crop_size=8, mean=(0.5,) * 3, std=(0.25,) * 3),
    )
    info = VersionInfo(
        version=1,
        weights=WeightsInfo(origin="random"),
        artifacts={"onnx": ArtifactInfo(file="model.onnx", sha256="0" * 64, bytes=0)},
    )
    return ModelEntry(config=config, path=folder, versions=(ModelVersion(info, folder / "1"),))


def fake_pool(
    folder: Path,
    settings: Settings,
    *,
    names: tuple[str, ...] = ("fake",),
    failing: tuple[str, ...] = (),
) -> tuple[ModelPool, dict[str, FakeEngine]]:
    """A pool of fake models; those in ``failing`` cannot create their engine."""
    engines: dict[str, FakeEngine] = {}

    def engine_factory(config: ModelConfig, version: Any, settings: Settings) -> FakeEngine:
        if config.name in failing:
            raise RuntimeError(f"cannot create session for {config.name}: corrupt artifact")
        return engines.setdefault(config.name, FakeEngine())

    entries = [fake_entry(folder, n) for n in names]
    return ModelPool(entries, settings, Metrics(), engine_factory=engine_factory), engines


def png(color: tuple[int, int, int] | int, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


WHITE = png((255, 255, 255))  # the fake engine fails any batch holding this
GRAY = png((128, 128, 128))


def build_app(
    tmp_path: Path,
    *,
    failing: tuple[str, ...] = (),
    names: tuple[str, ...] = ("fake",),
    **overrides: Any,
) -> tuple[FastAPI, dict[str, FakeEngine]]:
    """``create_app`` over fake engines; models in ``failing`` cannot create a session."""
    overrides.setdefault("grpc_port", 0)  # in-process apps: no V2 gRPC port to collide on
    settings = Settings(repository=tmp_path, warmup=False, decode_threads=2, **overrides)
    pool, engines = fake_pool(tmp_path, settings, names=names, failing=failing)
    return create_app(settings, pool=pool), engines


@asynccontextmanager
async def running(app: FastAPI, *, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Lifespan started, models loaded; an httpx client that behaves like a real server's."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app", timeout=30) as client,
    ):
        if wait_ready:
            await until(lambda: app.state.models.loaded)
        yield client


async def classify(client: httpx.AsyncClient, data: bytes, **kwargs: Any) -> httpx.Response:
    return await client.post("/classify", files=[("file", ("x.png", data))], **kwargs)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds, checking on every loop turn; fail after the bound."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.001)


async def engine_busy(engine: FakeEngine) -> None:
    """Wait (bounded) until a batch is inside the engine."""
    await asyncio.wait_for(asyncio.to_thread(engine.started.wait, 5), 6)
    assert engine.started.is_set()


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())
