"""Model lifecycle in the pool: swaps, unloads, failed loads, polling, memory, locking.

Requests are driven the way the pipeline drives them: resolve and reserve with no await
in between, then (after an await, as the body read) submit to the reserved batcher. The
fake engines answer ``[version, 0]``, so every answer says which version computed it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from service.errors import (
    BadRequest,
    ModelControlNotAllowed,
    ModelLoadFailed,
    ModelMemoryExceeded,
    ModelUnavailable,
    UnknownModel,
)
from service.pool import ModelPool
from tests.fakes import GRAY, run, until
from tests.lifecycle_fakes import (
    Factory,
    add_version,
    lifecycle_pool,
    make_repository,
    sample,
    write_config,
)


async def infer(pool: ModelPool, name: str = "fake") -> tuple[int, int]:
    """(version admitted to, version whose engine answered) for one request."""
    served = pool.get(name)
    with served.require_batcher().reserve(1) as reservation:
        await asyncio.sleep(0)  # the body read: other tasks run, a swap may happen here
        tensor = served.preprocessor(GRAY)
        (result,) = await reservation.submit([tensor], time.monotonic() + 10)
    return served.number, int(result.logits[0])


def test_swap_under_load_answers_every_request_on_the_version_it_was_admitted_to(
    tmp_path: Path,
) -> None:
    make_repository(tmp_path, serve_latest=1)
    factory = Factory(delay_s=0.002)
    pool, _ = lifecycle_pool(tmp_path, factory)

    async def scenario() -> None:
        await pool.load()
        answers: list[tuple[int, int]] = []
        errors: list[BaseException] = []

        async def client() -> None:
            for _ in range(25):  # 8 clients x 25 requests: bounded
                try:
                    answers.append(await infer(pool))
                except Exception as exc:  # every failure is the finding
                    errors.append(exc)

        clients = [asyncio.create_task(client()) for _ in range(8)]
        await until(lambda: len(answers) >= 30)
        add_version(tmp_path, 2)
        result = await pool.load_model("fake")
        await asyncio.gather(*clients)
        assert errors == []
        assert len(answers) == 200
        assert all(admitted == answered for admitted, answered in answers)
        versions = [admitted for admitted, _ in answers]
        assert versions.count(1) >= 30 and versions.count(2) >= 1
        # Once v2 took over, no request went to v1 again.
        assert versions == sorted(versions)
        assert result.loaded == (2,) and result.retired == (1,) and result.default_version == 2
        (old,) = factory.of(1)
        assert old.closed
        assert [(s.version, s.state) for s in pool.index()] == [("2", "ready")]
        assert sample(pool, "fake", "replaced", "model_unloads") == 1
        state = pool.metrics.registry.get_sample_value
        for version, expected in (("1", "stopped"), ("2", "ready")):
            labels = {"model": "fake", "version": version, "resnet_serve_model_state": expected}
            assert state("resnet_serve_model_state", labels) == 1
        assert list(k[:2] for k in pool.memory.held) == [("fake", 2)]
        await pool.stop(1)

    run(scenario)


def test_admitted_requests_finish_on_the_old_version_while_the_new_one_serves(
    tmp_path: Path,
) -> None:
    make_repository(tmp_path, serve_latest=1)
    factory = Factory()
    pool, _ = lifecycle_pool(tmp_path, factory)

    async def scenario() -> None:
        await pool.load()
        (v1,) = factory.of(1)
        v1.gate.clear()  # v1's engine holds its batch
        held = [asyncio.create_task(infer(pool)) for _ in range(3)]
        await until(v1.started.is_set)
        add_version(tmp_path, 2)
        loading = asyncio.create_task(pool.load_model("fake"))
        await until(lambda: pool.get("fake").number == 2)
        assert await infer(pool) == (2, 2)  # new requests: v2, while v1 still drains
        assert not loading.done()
        assert ("1", "unloading") in [(s.version, s.state) for s in pool.index()]
        v1.gate.set()
        assert await asyncio.gather(*held) == [(1, 1)] * 3
        await loading
        assert v1.closed
        await pool.stop(1)

    run(scenario)


def test_unload_during_traffic_answers_admitted_requests_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    make_repository(tmp_path)
    factory = Factory()
    pool, _ = lifecycle_pool(tmp_path, factory)

    async def scenario() -> None:
        await pool.load()
        (engine,) = factory.engines
        engine.gate.clear()
        held = [asyncio.create_task(infer(pool)) for _ in range(4)]
        await until(engine.started.is_set)
        unloading = asyncio.create_task(pool.unload_model("fake"))
        await until(lambda: pool.get("fake").status == "unloading")
        with pytest.raises(ModelUnavailable, match="unloading"):
            await infer(pool)
        engine.gate.set()
        assert await asyncio.gather(*held) == [(1, 1)] * 4
        result = await unloading
        assert result.retired == (1,) and result.action == "unloaded"
        assert engine.closed
        (state,) = pool.index()
        assert (state.state, state.triton_state) == ("stopped", "UNAVAILABLE")
        assert "unloaded" in state.reason
        assert pool.memory.used_bytes == 0
        with pytest.raises(ModelUnavailable, match="stopped"):
            await infer(pool)
        # Unloading again is harmless; loading brings it back.
        await pool.unload_model("fake")
        await pool.load_model("fake")
        assert await infer(pool) == (1, 1)
        await pool.stop(1)

    run(scenario)


def test_a_failed_load_leaves_what_was_serving_untouched_and_says_why(tmp_path: Path) -> None:
    make_repository(tmp_path)
    factory = Factory(fail=[2])
    pool, _ = lifecycle_pool(tmp_path, factory)

    async def scenario() -> None:
        await pool.load()
        add_version(tmp_path, 2)
        with pytest.raises(ModelLoadFailed, match="v2: RuntimeError: cannot create session") as err:
            await pool.load_model("fake")
        assert err.value.status == 400
        assert {"name": "fake", "version": "2", "state": "UNAVAILABLE"}.items() <= (
            err.value.details["versions"][1].items()
        )
        assert pool.get("fake").number == 1  # the default stays on the version serving
        assert await infer(pool) == (1, 1)
        assert sample(pool, "fake", "failed") == 1
        states = {s.version: (s.state, s.reason) for s in pool.index()}
        assert states["1"] == ("ready", "")
        assert states["2"][0] == "failed" and "corrupt artifact" in states["2"][1]
        # A reload of the serving version that fails keeps the old instance serving.
        factory.fail = {1, 2}
        write_config(tmp_path, mean=0.4)  # config.json changed: every version reloads
        with pytest.raises(ModelLoadFailed):
            await pool.load_model("fake")
        assert await infer(pool) == (1, 1)
        ready_1 = {"model": "fake", "version": "1", "resnet_serve_model_state": "ready"}
        assert pool.metrics.registry.get_sample_value("resnet_serve_model_state", ready_1) == 1
        (state_1,) = [s for s in pool.index() if s.version == "1"]
        assert state_1.state == "ready" and "reload refused" in state_1.reason
        assert [s.version for s in pool.index(ready=True)] == ["1"]
        await pool.stop(1)

    run(scenario)


def test_a_broken_model_folder_is_refused_with_the_file_named(tmp_path: Path) -> None:
    make_repository(tmp_path)
    pool, _ = lifecycle_pool(tmp_path, Factory())

    async def scenario() -> None:
        await pool.load()
        version_2 = add_version(tmp_path, 2)
        (version_2 / "model.onnx").write_bytes(b"trunc")  # a half-copied artifact
        with pytest.raises(ModelLoadFailed, match="does not match its sha256"):
            await pool.load_model("fake")
        assert await infer(pool) == (1, 1)
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text("{not json")
        with pytest.raises(ModelLoadFailed, match="not readable JSON"):
            await pool.load_model("other")
        assert ("other", "", "failed") in [(s.name, s.version, s.state) for s in pool.index()]
        await pool.stop(1)

    run(scenario)


def test_memory_budget_refuses_a_load_that_would_not_fit(tmp_path: Path) -> None:
    make_repository(tmp_path, serve_latest=1)  # artifacts of 1000 B: 2000 B each at 2.0
    pool, _ = lifecycle_pool(
        tmp_path, Factory(), model_memory_budget_bytes=3000, model_memory_factor=2.0
    )

    async def scenario() -> None:
        await pool.load()
        add_version(tmp_path, 2)
        with pytest.raises(ModelMemoryExceeded, match="needs ~2000 B") as err:
            await pool.load_model("fake")
        assert err.value.status == 409
        assert await infer(pool) == (1, 1)
        assert sample(pool, "fake", "memory_refused") == 1
        assert pool.memory.used_bytes == 2000
        # With room for both during the swap, the same load goes through.
        pool.memory.budget_bytes = 4000
        await pool.load_model("fake")
        assert await infer(pool) == (2, 2)
        assert pool.memory.used_bytes == 2000
        await pool.stop(1)

    run(scenario)


def test_memory_budget_too_small_at_start_up_fails_the_model_with_the_figures(
    tmp_path: Path,
) -> None:
    make_repository(tmp_path)
    pool, _ = lifecycle_pool(
        tmp_path, Factory(), model_memory_budget_bytes=1500, model_memory_factor=2.0
    )
    run(pool.load)
    (model,) = pool.all()
    assert model.status == "failed"
    assert "model_memory_budget_bytes" in (model.error or "")


def test_loads_of_one_model_are_serialised(tmp_path: Path) -> None:
    make_repository(tmp_path)
    factory = Factory()
    pool, _ = lifecycle_pool(tmp_path, factory)

    async def scenario() -> None:
        await pool.load()
        write_config(tmp_path, mean=0.4)
        factory.hold.clear()
        first = asyncio.create_task(pool.load_model("fake"))
        second = asyncio.create_task(pool.unload_model("fake"))
        third = asyncio.create_task(pool.load_model("fake"))
        await asyncio.sleep(0.05)
        factory.hold.set()
        await asyncio.gather(first, second, third)
        assert factory.most_building == 1
        assert [e.closed for e in factory.engines] == [True, True, False]
        assert await infer(pool) == (1, 1)
        await pool.stop(1)

    run(scenario)


def test_poll_mode_picks_up_a_new_version_a_changed_config_and_a_removed_model(
    tmp_path: Path,
) -> None:
    make_repository(tmp_path)
    write_config(tmp_path, "other")
    add_version(tmp_path, 1, "other")
    factory = Factory()
    pool, _ = lifecycle_pool(tmp_path, factory, model_control_mode="poll", repository_poll_secs=0.5)

    async def scenario() -> None:
        await pool.load()
        await asyncio.sleep(0.1)  # the poller's first read records what was loaded
        add_version(tmp_path, 2)
        await until(lambda: pool.get("fake").number == 2, timeout_s=5)
        assert await infer(pool) == (2, 2)
        write_config(tmp_path, mean=0.4)
        await until(lambda: pool.get("fake").entry.config.preprocessing.mean[0] == 0.4, 5)
        for path in sorted((tmp_path / "other").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / "other").rmdir()
        await until(lambda: pool.get("other").status == "stopped", timeout_s=5)
        write_config(tmp_path, "third")
        add_version(tmp_path, 5, "third")
        await until(lambda: ("third", "ready") in {(s.name, s.state) for s in pool.index()}, 5)
        assert await infer(pool, "third") == (5, 5)
        with pytest.raises(ModelControlNotAllowed, match="poll"):
            await pool.load_model("fake")
        await pool.stop(1)
        assert pool._poller is None

    run(scenario)


def test_control_mode_none_refuses_load_and_unload(tmp_path: Path) -> None:
    make_repository(tmp_path)
    pool, _ = lifecycle_pool(tmp_path, Factory(), model_control_mode="none")

    async def scenario() -> None:
        await pool.load()
        with pytest.raises(ModelControlNotAllowed, match="read once at start-up") as err:
            await pool.load_model("fake")
        assert err.value.status == 409
        with pytest.raises(ModelControlNotAllowed):
            await pool.unload_model("fake")
        await pool.stop(1)

    run(scenario)


def test_unknown_and_invalid_model_names_are_refused(tmp_path: Path) -> None:
    make_repository(tmp_path)
    pool, _ = lifecycle_pool(tmp_path, Factory())

    async def scenario() -> None:
        with pytest.raises(UnknownModel, match="no model 'missing'"):
            await pool.load_model("missing")
        with pytest.raises(UnknownModel):
            await pool.unload_model("missing")
        for name in ("../etc", ".hidden", "a/b", ""):
            with pytest.raises(BadRequest, match="invalid model name"):
                await pool.load_model(name)

    run(scenario)


def test_a_new_model_loads_and_the_index_lists_every_version(tmp_path: Path) -> None:
    make_repository(tmp_path)
    pool, _ = lifecycle_pool(tmp_path, Factory())

    async def scenario() -> None:
        await pool.load()
        write_config(tmp_path, "newcomer")
        add_version(tmp_path, 3, "newcomer")
        await pool.load_model("newcomer")
        assert await infer(pool, "newcomer") == (3, 3)
        assert [s.as_index_entry() for s in pool.index()] == [
            {"name": "fake", "version": "1", "state": "READY", "reason": ""},
            {"name": "newcomer", "version": "3", "state": "READY", "reason": ""},
        ]
        registry = pool.metrics.registry
        state = registry.get_sample_value(
            "resnet_serve_model_state",
            {"model": "newcomer", "version": "3", "resnet_serve_model_state": "ready"},
        )
        assert state == 1
        await pool.stop(1)

    run(scenario)


def test_a_request_admitted_before_a_swap_may_still_grow_to_all_its_images(
    tmp_path: Path,
) -> None:
    make_repository(tmp_path, serve_latest=1)
    pool, _ = lifecycle_pool(tmp_path, Factory())

    async def scenario() -> None:
        await pool.load()
        served = pool.get("fake")
        reservation = served.require_batcher().reserve(1)  # admitted, body not read yet
        add_version(tmp_path, 2)
        loading = asyncio.create_task(pool.load_model("fake"))
        await until(lambda: pool.get("fake").number == 2)
        reservation.resize(3)  # its body held three images
        tensors = [served.preprocessor(GRAY)] * 3
        results = await reservation.submit(tensors, time.monotonic() + 5)
        assert [int(r.logits[0]) for r in results] == [1, 1, 1]
        await loading  # the drain waited for it
        with pytest.raises(ModelUnavailable):
            served.require_batcher()
        await pool.stop(1)

    run(scenario)


def test_unloading_the_default_model_does_not_undo_a_successful_start(tmp_path: Path) -> None:
    make_repository(tmp_path)
    pool, _ = lifecycle_pool(tmp_path, Factory())

    async def scenario() -> None:
        await pool.load()
        assert pool.startup_ok is True
        await pool.unload_model("fake")
        assert pool.startup_ok is True and not pool.default_of("fake").serving

    run(scenario)


def test_a_load_call_during_the_initial_load_is_not_loaded_twice(tmp_path: Path) -> None:
    make_repository(tmp_path)
    write_config(tmp_path, "second")
    add_version(tmp_path, 1, "second")
    factory = Factory()
    pool, _ = lifecycle_pool(tmp_path, factory)

    async def scenario() -> None:
        factory.hold.clear()  # the initial load stalls on the first model's engine
        initial = asyncio.create_task(pool.load())
        explicit = asyncio.create_task(pool.load_model("second"))
        await asyncio.sleep(0.05)
        factory.hold.set()
        await asyncio.gather(initial, explicit)
        assert len(factory.engines) == 2  # one per model, none built and leaked
        assert all(m.status == "ready" for m in pool.all())
        await pool.stop(1)

    run(scenario)


def test_the_admin_key_is_required_and_distinct(tmp_path: Path) -> None:
    from service.errors import Unauthorized
    from service.lifecycle import check_admin_key

    check_admin_key("admin", "admin")
    check_admin_key("admin", b"admin")
    for presented in (None, "wrong", "\xff", b"\xff"):
        with pytest.raises(Unauthorized, match="X-Admin-Key"):
            check_admin_key("admin", presented)
    with pytest.raises(ModelControlNotAllowed, match="repository API is off"):
        check_admin_key(None, "anything")


def test_a_swap_under_http_traffic_loses_and_misroutes_nothing(tmp_path: Path) -> None:
    """The same swap through the real app and request pipeline (/classify over ASGI)."""
    import math

    from service.app import create_app
    from tests.fakes import classify, running

    make_repository(tmp_path, serve_latest=1)
    pool, settings = lifecycle_pool(tmp_path, Factory(delay_s=0.002), decode_threads=2)
    app = create_app(settings, pool=pool)

    def score_of(version: int) -> float:  # softmax of the engine's [version, 0]
        return 1 / (1 + math.exp(-version))

    async def scenario() -> None:
        async with running(app) as client:
            answers: list[tuple[int, int, float]] = []

            async def client_loop() -> None:
                for _ in range(30):  # 4 clients x 30 requests: bounded
                    response = await classify(client, GRAY)
                    top = response.json()["results"][0]["predictions"][0]
                    answers.append((response.status_code, response.json()["version"], top["score"]))

            clients = [asyncio.create_task(client_loop()) for _ in range(4)]
            await until(lambda: len(answers) >= 20)
            add_version(tmp_path, 2)
            await pool.load_model("fake")
            await asyncio.gather(*clients)
        assert [code for code, _, _ in answers] == [200] * 120
        assert all(score == pytest.approx(score_of(v), abs=1e-4) for _, v, score in answers)
        assert {v for _, v, _ in answers} == {1, 2}

    run(scenario)


def test_the_gate_recheck_exposes_a_serving_version_that_stopped_answering_as_recorded(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)
    add_version(tmp_path, 1, golden=True)
    factory = Factory()
    pool, _ = lifecycle_pool(tmp_path, factory, gate_recheck_secs=1000)

    async def scenario() -> None:
        await pool.load()
        (model,) = pool.all()
        assert (model.status, model.gate) == ("ready", "passed")  # the load-time gate
        rechecker = pool._rechecker
        assert rechecker is not None
        assert await rechecker.recheck_once() == {"fake:1": True}
        (engine,) = factory.engines
        engine.version = 7  # the engine now answers otherwise (a faulty device)
        assert await rechecker.recheck_once() == {"fake:1": False}
        (state,) = pool.index()
        assert state.state == "ready" and "gate re-check refused" in state.reason
        refused = {"model": "fake", "version": "1", "resnet_serve_gate_outcome": "refused"}
        assert pool.metrics.registry.get_sample_value("resnet_serve_gate_outcome", refused) == 1
        await pool.stop(1)
        assert pool._rechecker is None

    run(scenario)


def test_a_version_whose_engine_disagrees_with_its_golden_set_never_serves(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)
    add_version(tmp_path, 1, golden=True)
    pool, _ = lifecycle_pool(tmp_path, Factory())

    async def scenario() -> None:
        await pool.load()
        add_version(tmp_path, 2, golden=True)
        version_json = tmp_path / "fake" / "2" / "version.json"
        info = json.loads(version_json.read_text())
        # Another version's answers recorded as v2's: v2's engine disagrees with them.
        info["golden"]["logits"]["onnx"] = [[3.0, 0.0]] * 4
        version_json.write_text(json.dumps(info))
        with pytest.raises(ModelLoadFailed, match="correctness gate"):
            await pool.load_model("fake")
        assert await infer(pool) == (1, 1)
        assert sample(pool, "fake", "gate_refused") == 1
        await pool.stop(1)

    run(scenario)


def test_poll_ignores_work_in_progress_and_unloads_a_model_left_without_versions(
    tmp_path: Path,
) -> None:
    from service.poller import fingerprint

    make_repository(tmp_path)
    assert fingerprint(tmp_path / "fake") is not None
    write_config(tmp_path, "fresh")  # an export publishing a new model: config first
    assert fingerprint(tmp_path / "fresh") is None
    (tmp_path / "fresh" / "1").mkdir()  # a version number reserved, no version.json yet
    assert fingerprint(tmp_path / "fresh") is None
    (tmp_path / "fresh" / "1").rmdir()
    add_version(tmp_path, 1, "fresh")
    assert fingerprint(tmp_path / "fresh") is not None
    pool, _ = lifecycle_pool(
        tmp_path, Factory(), model_control_mode="poll", repository_poll_secs=0.5
    )

    async def scenario() -> None:
        await pool.load()
        await asyncio.sleep(0.1)
        version = tmp_path / "fresh" / "1"
        for path in version.iterdir():
            path.unlink()
        version.rmdir()
        await until(lambda: pool.get("fresh").status == "stopped", timeout_s=5)
        assert "removed from the repository" in (pool.get("fresh").error or "")
        await pool.stop(1)

    run(scenario)
