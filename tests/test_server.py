"""How run_server configures uvicorn (a bounded drain, no access log with bodies) and
what a second signal during the drain does to a real server."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.server import EXIT_DRAIN_CUT, DrainingServer, run_server
from service.settings import Settings
from tests.reliability import images


def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object
) -> uvicorn.Config:
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(DrainingServer, "run", lambda self, sockets=None: seen.append(self.config))
    assert run_server(Settings(repository=tmp_path, **settings)) == 0
    (config,) = seen
    return config


@pytest.mark.parametrize(("drain_s", "bound_s"), [(0.5, 1), (20.0, 20), (0.0, 0)])
def test_drain_timeout_is_always_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drain_s: float, bound_s: int
) -> None:
    # None would make uvicorn wait for open requests forever.
    config = configured(tmp_path, monkeypatch, drain_timeout_s=drain_s)
    assert config.timeout_graceful_shutdown == bound_s


def test_access_log_is_off_unless_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured(tmp_path, monkeypatch).access_log is False
    assert configured(tmp_path, monkeypatch, log_level="debug").access_log is True


def post(url: str, files: list[tuple[str, tuple[str, bytes]]]) -> tuple[int, str]:
    """(status, error code): every request must get an answer, even during a cut."""
    response = httpx.post(f"{url}/classify", files=files, timeout=60)
    error = response.json().get("error", {}).get("code", "") if response.status_code >= 400 else ""
    return response.status_code, error


def test_second_sigterm_cuts_the_drain_answers_queued_503_and_exits_non_zero(
    start_server, model_repository: Path
) -> None:
    # One image per batch on one thread: the queued work takes seconds to drain.
    srv = start_server(
        model_repository,
        max_batch_size=1,
        intra_op_threads=1,
        drain_timeout_s=120,
        warmup="false",
    )
    image = images.encode(images.photo_like(320, 240), "JPEG")
    files = [("file", (f"{i}.jpg", image)) for i in range(8)]
    with ThreadPoolExecutor(8) as clients:
        answers = [clients.submit(post, srv.url, files) for _ in range(8)]
        deadline = time.monotonic() + 60
        while srv.metric("resnet_serve_queue_depth") < 8:  # until work is queued
            assert time.monotonic() < deadline, srv.logs()[-3000:]
            time.sleep(0.05)
        srv.process.send_signal(signal.SIGTERM)
        while "draining" not in srv.logs():
            assert time.monotonic() < deadline, srv.logs()[-3000:]
            time.sleep(0.05)
        cut_at = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        code = srv.process.wait(timeout=30)
        exit_s = time.monotonic() - cut_at
        outcomes = [a.result(timeout=60) for a in answers]
    logs = srv.logs()
    assert code == EXIT_DRAIN_CUT, logs[-3000:]
    assert exit_s < 10, (exit_s, logs[-3000:])
    # Queued work is answered 503 "retry elsewhere", not dropped, not a 500.
    assert (503, "model_unavailable") in outcomes, outcomes
    assert set(outcomes) <= {(200, ""), (503, "model_unavailable")}, outcomes
    assert "cutting" in logs and "Traceback" not in logs, logs[-3000:]
