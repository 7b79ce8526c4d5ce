"""The real app in-process (lifespan included) over a fake engine, for fault tests."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from service.api import create_app
from service.metrics import Metrics
from service.pool import ModelPool
from service.settings import Settings
from tests.reliability.fakes import FakeEngine, fake_entry


def png(color: tuple[int, int, int] | int, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


WHITE = png((255, 255, 255))  # the fake engine fails any batch holding this
GRAY = png((128, 128, 128))


def build_app(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    failing: tuple[str, ...] = (),
    names: tuple[str, ...] = ("fake",),
    **overrides: Any,
) -> tuple[FastAPI, dict[str, FakeEngine]]:
    """``create_app`` over fake engines; models in ``failing`` cannot create a session."""
    engines: dict[str, FakeEngine] = {}

    def create_engine(config: Any, version: Any, settings: Settings) -> FakeEngine:
        if config.name in failing:
            raise RuntimeError(f"cannot create session for {config.name}: corrupt artifact")
        return engines.setdefault(config.name, FakeEngine())

    monkeypatch.setattr("service.pool.create_engine", create_engine)
    settings = Settings(repository=tmp_path, warmup=False, decode_threads=2, **overrides)
    pool = ModelPool([fake_entry(tmp_path, n) for n in names], settings, Metrics())
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
            for _ in range(200):
                if app.state.pool.loaded:
                    break
                await asyncio.sleep(0.01)
            assert app.state.pool.loaded
        yield client


async def classify(client: httpx.AsyncClient, data: bytes, **kwargs: Any) -> httpx.Response:
    return await client.post("/classify", files=[("file", ("x.png", data))], **kwargs)


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())
