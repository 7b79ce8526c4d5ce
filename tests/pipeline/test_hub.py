"""The request pipeline driven directly, with the fake engine and no HTTP.

Every door (``/classify``, V2 REST, V2 gRPC) calls exactly :meth:`Pipeline.serve`, so
what holds here holds behind each of them: admission, budgets released on every path,
deadlines, cancellation, and one observation of each request's metrics. Calls are made
in-process (:class:`LocalCall`), or through :class:`BodyCall` where a body is read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.errors import (
    BadImage,
    BadRequest,
    DeadlineExceeded,
    Overloaded,
    SettingsError,
    TooManyImages,
    UnknownModel,
)
from service.pipeline import EncodedImage, Inputs, Pipeline
from service.pipeline.local import LocalCall
from service.settings import Settings
from tests.fakes import GRAY, WHITE, FakeEngine, engine_busy, fake_pool, png, until
from tests.pipeline.calls import BodyCall


def images(*data: bytes | EncodedImage, **call: object) -> LocalCall:
    encoded = [d if isinstance(d, EncodedImage) else EncodedImage(d) for d in data]
    return LocalCall(Inputs(images=encoded), **call)  # type: ignore[arg-type]


def make_pipeline(tmp_path: Path, **overrides: object) -> tuple[Pipeline, FakeEngine]:
    settings = Settings(repository=tmp_path, warmup=False, decode_threads=2, **overrides)
    pool, engines = fake_pool(tmp_path, settings)
    return Pipeline(pool, settings, pool.metrics), engines.setdefault("fake", FakeEngine())


def sample(pipeline: Pipeline, name: str, **labels: str) -> float:
    value = pipeline.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def idle(pipeline: Pipeline) -> bool:
    """Nothing held: every budget and reservation was given back."""
    batcher = pipeline.models.get("fake").batcher
    assert batcher is not None
    return (
        pipeline.body_budget.used == 0
        and pipeline.decode_budget.used == 0
        and batcher.queued == 0
        and batcher._reserved == 0
    )


def test_images_are_decoded_batched_and_answered_in_order(tmp_path: Path) -> None:
    pipeline, _ = make_pipeline(tmp_path)

    async def scenario() -> None:
        await pipeline.models.load()
        dark = png((0, 0, 0))
        outcome = await pipeline.serve(BodyCall([GRAY, dark]))
        assert outcome.model.name == "fake"
        assert outcome.logits.shape == (2, 2)
        assert outcome.logits[0, 0] > outcome.logits[1, 0]  # gray brighter than black
        assert outcome.timings.batch_size == 2
        assert idle(pipeline)
        labels = {"model": "fake", "version": "1", "protocol": "classify"}
        assert sample(pipeline, "resnet_serve_requests_total", **labels, code="200") == 1
        assert sample(pipeline, "resnet_serve_images_total", **labels) == 2
        assert sample(pipeline, "resnet_serve_in_flight_requests", **labels) == 0
        await pipeline.models.stop(1)

    asyncio.run(scenario())


def test_tensors_skip_decoding_and_are_checked(tmp_path: Path) -> None:
    pipeline, _ = make_pipeline(tmp_path)

    async def scenario() -> None:
        await pipeline.models.load()
        good = np.full((3, 3, 8, 8), 0.25, dtype=np.float32)
        tensors = Inputs(tensor=good)
        outcome = await pipeline.serve(LocalCall(tensors, model="fake", version=1, door="v2-grpc"))
        assert outcome.logits[:, 0] == pytest.approx([0.25] * 3)
        for bad in (
            np.zeros((1, 3, 7, 8), np.float32),
            np.zeros((3, 8, 8), np.float32),
            np.zeros((1, 3, 8, 8), np.float64),
            np.full((1, 3, 8, 8), np.nan, np.float32),
        ):
            with pytest.raises(BadRequest):
                await pipeline.serve(LocalCall(Inputs(tensor=bad), model="fake", door="v2-rest"))
        assert idle(pipeline)
        labels = {"model": "fake", "version": "1", "protocol": "v2-rest", "code": "400"}
        assert sample(pipeline, "resnet_serve_requests_total", **labels) == 4
        await pipeline.models.stop(1)

    asyncio.run(scenario())


def test_refusals_are_typed_counted_and_release_everything(tmp_path: Path) -> None:
    pipeline, _ = make_pipeline(
        tmp_path,
        max_images_per_request=2,
        max_body_bytes_in_flight=4096,
        max_body_bytes=4096,
        grpc_max_message_bytes=4096,
    )

    async def scenario() -> None:
        await pipeline.models.load()
        with pytest.raises(UnknownModel):
            await pipeline.serve(images(GRAY, model="nope"))
        assert sample(
            pipeline,
            "resnet_serve_requests_total",
            model="_unknown",
            version="",
            protocol="classify",
            code="404",
        )
        with pytest.raises(TooManyImages):
            await pipeline.serve(images(GRAY, GRAY, GRAY))
        with pytest.raises(BadImage) as info:
            await pipeline.serve(images(GRAY, EncodedImage(GRAY[:50], "b.png")))
        assert info.value.details == {"image_index": 1, "filename": "b.png"}
        assert pipeline.body_budget.try_take(4000)  # others hold most of the body budget
        with pytest.raises(Overloaded) as full:
            await pipeline.serve(BodyCall([b"x" * 200]))  # 503 at once, before reading
        assert full.value.retry_after_s == 1
        pipeline.body_budget.give(4000)
        # A decode already running when its sibling failed gives its budget back when it
        # ends, in its thread: the refusal does not wait for it.
        await until(lambda: idle(pipeline))
        await pipeline.models.stop(1)

    asyncio.run(scenario())


def test_deadline_covers_decode_and_queue_and_releases_budgets(tmp_path: Path) -> None:
    pipeline, engine = make_pipeline(tmp_path, max_batch_size=1)

    async def scenario() -> None:
        await pipeline.models.load()
        engine.gate.clear()
        first = asyncio.create_task(pipeline.serve(images(GRAY)))
        await engine_busy(engine)
        with pytest.raises(DeadlineExceeded):
            await pipeline.serve(images(WHITE, timeout_s=0.05))
        assert not engine.gate.is_set()  # answered while the engine was still stuck
        engine.gate.set()
        await first
        assert len(engine.batches) == 1  # the expired image never ran
        assert idle(pipeline)
        await pipeline.models.stop(1)

    asyncio.run(scenario())


def test_cancelled_request_releases_everything_and_its_images_never_run(tmp_path: Path) -> None:
    pipeline, engine = make_pipeline(tmp_path, max_batch_size=1)

    async def scenario() -> None:
        await pipeline.models.load()
        engine.gate.clear()

        async def one(data: bytes) -> None:
            await pipeline.serve(BodyCall([data]))

        first = asyncio.create_task(one(GRAY))
        await engine_busy(engine)
        gone = asyncio.create_task(one(WHITE))
        batcher = pipeline.models.get("fake").batcher
        assert batcher is not None
        await until(lambda: batcher.queued == 1)
        gone.cancel()  # the client hung up while its image was queued
        with pytest.raises(asyncio.CancelledError):
            await gone
        engine.gate.set()
        await first
        assert len(engine.batches) == 1
        assert idle(pipeline)
        labels = {"model": "fake", "version": "1", "protocol": "classify"}
        assert sample(pipeline, "resnet_serve_requests_total", **labels, code="499") == 1
        await pipeline.models.stop(1)

    asyncio.run(scenario())


def test_decodes_wait_for_decode_memory_and_give_it_back(tmp_path: Path) -> None:
    pipeline, _ = make_pipeline(tmp_path)
    budget = pipeline.decode_budget

    async def scenario() -> None:
        await pipeline.models.load()
        assert budget.try_take(budget.capacity - 1)  # someone else holds it all
        waiting = asyncio.create_task(pipeline.serve(images(GRAY, GRAY, GRAY)))
        await until(lambda: bool(budget._waiters))  # headers read, waiting for room
        assert not waiting.done()
        budget.give(budget.capacity - 1)
        outcome = await asyncio.wait_for(waiting, 10)
        assert outcome.logits.shape == (3, 2)
        assert idle(pipeline)
        await pipeline.models.stop(1)

    asyncio.run(scenario())


def test_a_decode_budget_below_one_maximal_image_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="max_decode_bytes_in_flight"):
        make_pipeline(tmp_path, max_image_pixels=40_000_000, max_decode_bytes_in_flight=2**28)


def test_a_spent_client_timeout_leaves_no_time_not_unlimited_time(tmp_path: Path) -> None:
    pipeline, engine = make_pipeline(tmp_path)

    async def scenario() -> None:
        await pipeline.models.load()
        for spent in (0.0, -1.0):
            with pytest.raises(DeadlineExceeded):
                await pipeline.serve(images(GRAY, timeout_s=spent, door="v2-grpc"))
        assert engine.batches == []  # nothing ran
        assert idle(pipeline)
        await pipeline.models.stop(1)

    asyncio.run(scenario())
