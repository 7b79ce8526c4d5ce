"""One readiness rule: every health endpoint of every door agrees, in every state.

``/health/live|ready``, ``/v2/health/live|ready``, ``/v2/models/<m>/ready`` and the gRPC
ServerLive, ServerReady and ModelReady calls ask :class:`service.readiness.Readiness`,
so they give one answer while loading, with the default model failed, with a model
stuck on a batch, and while draining. (The KServe runtime probes the V2 endpoints: a
pod whose default model failed must not be put in service.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tritonclient.grpc import service_pb2

from service.v2.grpc_server import InferenceServicer
from tests.fakes import GRAY, build_app, classify, engine_busy, running, until


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    model_ready: bool


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()


async def every_door(app: FastAPI, client: httpx.AsyncClient, model: str) -> dict[str, Health]:
    """The three answers as each door gives them."""
    pipeline = app.state.pipeline
    servicer = InferenceServicer(pipeline, app.state.settings)

    async def ok(path: str) -> bool:
        status = (await client.get(path)).status_code
        assert status in (200, 503), (path, status)
        return status == 200

    live = await servicer.ServerLive(service_pb2.ServerLiveRequest(), Context())
    ready = await servicer.ServerReady(service_pb2.ServerReadyRequest(), Context())
    model_ready = await servicer.ModelReady(service_pb2.ModelReadyRequest(name=model), Context())
    return {
        "http": Health(
            await ok("/health/live"),
            await ok("/health/ready"),
            await ok(f"/v2/models/{model}/ready"),
        ),
        "v2-rest": Health(
            await ok("/v2/health/live"),
            await ok("/v2/health/ready"),
            await ok(f"/v2/models/{model}/ready"),
        ),
        "v2-grpc": Health(live.live, ready.ready, model_ready.ready),
    }


def agreed(answers: dict[str, Health]) -> Health:
    assert len(set(answers.values())) == 1, answers
    return next(iter(answers.values()))


def test_while_loading_every_door_says_live_not_ready(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        # No lifespan yet: the pool has not loaded.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            assert agreed(await every_door(app, client, "fake")) == Health(True, False, False)
            assert (await client.get("/health/startup")).status_code == 503

    asyncio.run(scenario())


def test_with_the_default_model_failed_no_door_says_live_or_ready(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path, names=("fake", "other"), failing=("fake",), default_model="fake")

    async def scenario() -> None:
        async with running(app) as client:
            answers = await every_door(app, client, "fake")
            assert agreed(answers) == Health(False, False, False)
            # The other model serves, and says so on every door; the server does not.
            other = await every_door(app, client, "other")
            assert {h.model_ready for h in other.values()} == {True}
            assert {h.ready for h in other.values()} == {False}

    asyncio.run(scenario())


def test_with_the_default_model_stuck_every_door_says_not_ready(tmp_path: Path) -> None:
    app, engines = build_app(tmp_path, stuck_batch_after_s=0.05)

    async def scenario() -> None:
        async with running(app) as client:
            assert agreed(await every_door(app, client, "fake")) == Health(True, True, True)
            engine = engines["fake"]
            engine.gate.clear()
            request = asyncio.create_task(classify(client, GRAY))
            await engine_busy(engine)
            served = app.state.models.get("fake")
            await until(lambda: served.stuck)
            assert agreed(await every_door(app, client, "fake")) == Health(True, False, False)
            engine.gate.set()
            assert (await request).status_code == 200
            await until(lambda: not served.stuck)
            assert agreed(await every_door(app, client, "fake")) == Health(True, True, True)

    asyncio.run(scenario())


def test_while_draining_every_door_says_live_not_ready(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            app.state.pipeline.readiness.draining = True
            assert agreed(await every_door(app, client, "fake")) == Health(True, False, False)

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/v2/models/nope/ready", "/v2/models/fake/versions/9/ready"])
def test_an_unknown_model_or_version_is_the_protocols_404(tmp_path: Path, path: str) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> Any:
        async with running(app) as client:
            return await client.get(path)

    assert asyncio.run(scenario()).status_code == 404
