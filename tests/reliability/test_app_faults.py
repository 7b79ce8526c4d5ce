"""Engine faults, overload, deadlines and draining through the real app (fake engine)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest
import uvicorn

from service.server import DrainingServer
from tests.fakes import GRAY, WHITE, build_app, classify, run, running, until


def test_engine_exception_fails_its_batch_with_500_and_the_next_batch_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            failed = await classify(client, WHITE)
            assert failed.status_code == 500
            error = failed.json()["error"]
            assert error["code"] == "engine_error"
            assert "marked input" not in failed.text  # internals only in the log
            ok = await classify(client, GRAY)
            assert ok.status_code == 200, ok.text
            assert ok.json()["results"][0]["predictions"][0]["label"] == "bright"

    with caplog.at_level(logging.ERROR, logger="service.batching"):
        run(scenario)
    assert any("batch of 1 failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_full_queue_answers_503_with_retry_after_and_live_stays_up(tmp_path: Path) -> None:
    app, engines = build_app(tmp_path, max_queue_size=2, max_batch_size=1, max_images_per_request=1)

    async def scenario() -> None:
        async with running(app) as client:
            engine = engines["fake"]
            engine.gate.clear()
            held = [asyncio.create_task(classify(client, GRAY))]
            await asyncio.to_thread(engine.started.wait, 5)
            held += [asyncio.create_task(classify(client, GRAY)) for _ in range(2)]
            batcher = app.state.models.get("fake").batcher
            await until(lambda: batcher.queued == 2)  # the queue behind the held batch
            refused = await classify(client, GRAY)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            live = await client.get("/health/live")
            assert live.status_code == 200
            assert not engine.gate.is_set()  # all of this while the engine was stuck
            engine.gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]

    run(scenario)


def test_client_deadline_header_gives_504_and_the_image_is_not_run(tmp_path: Path) -> None:
    app, engines = build_app(tmp_path, max_batch_size=1)

    async def scenario() -> None:
        async with running(app) as client:
            engine = engines["fake"]
            engine.gate.clear()
            first = asyncio.create_task(classify(client, GRAY))
            await asyncio.to_thread(engine.started.wait, 5)
            late = await classify(client, WHITE, headers={"X-Request-Timeout-Ms": "100"})
            assert late.status_code == 504
            assert late.json()["error"]["code"] == "deadline_exceeded"
            assert not engine.gate.is_set()
            engine.gate.set()
            assert (await first).status_code == 200
            # WHITE would have failed its batch had it run; only GRAY reached the engine.
            assert len(engine.batches) == 1
            for bad in ("0", "-5", "abc", "inf", "nan"):
                response = await classify(client, GRAY, headers={"X-Request-Timeout-Ms": bad})
                assert response.status_code == 400, bad

    run(scenario)


def test_model_whose_session_fails_is_reported_and_others_serve(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path, names=("broken", "fake"), failing=("broken",))

    async def scenario() -> None:
        async with running(app) as client:
            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["unavailable"] == {"broken:1": "failed"}
            models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
            assert models["broken"]["status"] == "failed"
            assert "corrupt artifact" in models["broken"]["error"]
            refused = await classify(client, GRAY, params={"model": "broken"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "model_unavailable"
            assert (await classify(client, GRAY, params={"model": "fake"})).status_code == 200

    run(scenario)


def test_sigterm_turns_readiness_to_draining(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            assert (await client.get("/health/ready")).status_code == 200
            DrainingServer(uvicorn.Config(app), app).handle_exit(signal.SIGTERM, None)
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "draining"
            assert (await client.get("/health/live")).status_code == 200

    run(scenario)
