"""Probes, readiness rules, strict mode and /metrics negotiation.

In-process tests drive the real app over fake engines; the strict-mode and failed-load
tests run a real server with a model whose artifact ONNX Runtime cannot load.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.engines import device_mismatch
from service.metrics import Metrics
from service.pool import ModelPool
from service.readiness import Readiness
from service.settings import Settings
from tests.fakes import FakeEngine, build_app, fake_entry, run, running, until
from tests.reliability.test_model_unavailable_http import broken_copy

BROKEN = "resnet18-broken"


def test_startup_and_ready_answer_503_while_models_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()

    def slow_engine(*_: Any) -> FakeEngine:
        gate.wait(20)  # bounded: the test opens it
        return FakeEngine()

    settings = Settings(repository=tmp_path, warmup=False, decode_threads=2)
    pool = ModelPool([fake_entry(tmp_path)], settings, Metrics(), engine_factory=slow_engine)
    app = create_app(settings, pool=pool)

    async def scenario() -> None:
        async with running(app, wait_ready=False) as client:
            startup = await client.get("/health/startup")
            assert startup.status_code == 503 and startup.json()["status"] == "loading"
            ready = await client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["status"] == "not ready"
            assert (await client.get("/health/live")).status_code == 200
            gate.set()
            await until(lambda: app.state.models.loaded)
            assert (await client.get("/health/startup")).json() == {"status": "started"}
            assert (await client.get("/health/ready")).status_code == 200

    run(scenario)


def test_failed_default_model_fails_startup_and_liveness_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = build_app(
        tmp_path, names=("broken", "fake"), failing=("broken",), default_model="broken"
    )

    async def scenario() -> None:
        async with running(app) as client:
            assert (await client.get("/health/startup")).status_code == 503
            live = await client.get("/health/live")
            assert live.status_code == 503 and live.json()["status"] == "failed"
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "default model not serving"
            assert body["unavailable"] == {"broken:1": "failed"}
            assert "corrupt artifact" in body["failed"]["broken:1"]

    run(scenario)


@pytest.mark.parametrize(("require_all", "expected"), [(False, 200), (True, 503)])
def test_require_all_models_turns_one_failed_model_into_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_all: bool, expected: int
) -> None:
    app, _ = build_app(
        tmp_path,
        names=("broken", "fake"),
        failing=("broken",),
        default_model="fake",
        require_all_models=require_all,
    )

    async def scenario() -> None:
        async with running(app) as client:
            assert (await client.get("/health/startup")).status_code == 200
            assert (await client.get("/health/live")).status_code == 200
            ready = await client.get("/health/ready")
            assert ready.status_code == expected, ready.json()
            assert ready.json()["unavailable"] == {"broken:1": "failed"}

    run(scenario)


def test_metrics_negotiate_openmetrics_and_gzip_and_include_process_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            plain = await client.get("/metrics")
            assert plain.headers["content-type"].startswith("text/plain")
            assert "# EOF" not in plain.text
            for name in ("process_cpu_seconds_total", "python_info", "python_gc_objects"):
                assert name in plain.text, name
            assert "resnet_serve_model_ready" in plain.text
            open_metrics = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
            assert open_metrics.text.rstrip().endswith("# EOF")
            zipped = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
            assert zipped.headers["content-encoding"] == "gzip"
            # httpx decodes gzip itself; the raw stream must really be gzip.
            raw = await client.send(
                client.build_request("GET", "/metrics", headers={"Accept-Encoding": "gzip"}),
                stream=True,
            )
            compressed = b"".join([chunk async for chunk in raw.aiter_raw()])
            await raw.aclose()
            assert b"resnet_serve_model_ready" in gzip.decompress(compressed)

    run(scenario)


def served(provider: str, *, providers: tuple[str, ...] | None = None, device: str = "auto") -> Any:
    config = SimpleNamespace(providers=providers, device=device)
    return SimpleNamespace(
        name="m",
        number=1,
        status="ready",
        error=None,
        provider=provider,
        entry=SimpleNamespace(config=config),
    )


@pytest.mark.parametrize(
    ("model", "settings", "mismatch"),
    [
        (served("CPUExecutionProvider", providers=("CUDAExecutionProvider",)), {}, True),
        (served("CUDAExecutionProvider", providers=("CUDAExecutionProvider",)), {}, False),
        (
            served("CUDAExecutionProvider"),
            {"providers": "TensorrtExecutionProvider,CUDAExecutionProvider"},
            True,
        ),
        (served("cpu", device="cuda"), {}, True),
        (served("cuda:0", device="cuda"), {}, False),
        (served("CPUExecutionProvider", device="cuda"), {}, True),
        (served("CPUExecutionProvider"), {}, False),  # nothing asked for: no complaint
        (served("CPUExecutionProvider", providers=("CPUExecutionProvider",)), {}, False),
    ],
)
def test_provider_fallback_from_a_requested_gpu_is_a_strict_problem(
    tmp_path: Path, model: Any, settings: dict[str, Any], mismatch: bool
) -> None:
    chosen = Settings(repository=tmp_path, **settings)
    result = device_mismatch(model.entry.config, chosen, model.provider)
    assert (result is not None) == mismatch, result
    pool = SimpleNamespace(all=lambda: [model])
    problems = Readiness(pool, chosen).startup_problems()  # type: ignore[arg-type]
    assert (problems == {"m:1": result}) if mismatch else problems == {}


def repository_with_broken(model_repository: Path, root: Path, *, with_good: bool) -> Path:
    root.mkdir()
    if with_good:
        (root / "resnet18").symlink_to(model_repository / "resnet18")
    broken_copy(model_repository / "resnet18", root / BROKEN)
    return root


def test_strict_server_exits_non_zero_naming_the_model_that_failed(
    start_server, model_repository: Path, tmp_path: Path
) -> None:
    repository = repository_with_broken(model_repository, tmp_path / "repo", with_good=True)
    srv = start_server(repository, wait=False, strict="true", max_batch_size=1)
    code = srv.process.wait(timeout=120)
    logs = srv.logs()
    assert code == 3, logs[-3000:]
    strict_lines = [line for line in logs.splitlines() if "strict mode" in line]
    assert len(strict_lines) == 1, logs[-3000:]
    assert f"model {BROKEN}:1 failed to load" in strict_lines[0]


def test_server_whose_only_model_failed_fails_startup_and_liveness(
    start_server, model_repository: Path, tmp_path: Path
) -> None:
    repository = repository_with_broken(model_repository, tmp_path / "repo", with_good=False)
    srv = start_server(repository, wait=False)
    deadline = time.monotonic() + 60
    phase = None
    while time.monotonic() < deadline and phase != "failed":
        assert srv.process.poll() is None, srv.logs()[-3000:]
        with contextlib.suppress(httpx.TransportError):
            phase = httpx.get(f"{srv.url}/health/startup", timeout=5).json()["status"]
        time.sleep(0.1)
    assert phase == "failed", srv.logs()[-3000:]
    assert httpx.get(f"{srv.url}/health/startup", timeout=5).status_code == 503
    assert httpx.get(f"{srv.url}/health/live", timeout=5).status_code == 503
    ready = httpx.get(f"{srv.url}/health/ready", timeout=5)
    assert ready.status_code == 503 and BROKEN + ":1" in ready.json()["failed"]
