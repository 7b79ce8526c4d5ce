"""How run_server configures uvicorn (a bounded drain, no access log with bodies, the
connection bounds), what a second signal during the drain does to a real server, and
what a port in use does to a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from benchmarks.harness import REPO_ROOT, free_port
from service.cli import build_parser
from service.http_limits import BoundedHttp
from service.server import EXIT_DRAIN_CUT, EXIT_PORT_IN_USE, DrainingServer, run_server
from service.settings import Settings
from tests.reliability import images


def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object
) -> uvicorn.Config:
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(DrainingServer, "run", lambda self, sockets=None: seen.append(self.config))
    settings = {"port": 0, "grpc_port": 0, **settings}
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


def test_connections_are_bounded_by_the_protocol_not_uvicorns_plain_text_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configured(
        tmp_path,
        monkeypatch,
        max_connections=7,
        head_timeout_s=2.5,
        keep_alive_timeout_s=3,
        max_header_bytes=2048,
    )
    # uvicorn's limit answers plain text without Retry-After, after accepting the head.
    assert config.limit_concurrency is None
    assert config.timeout_keep_alive == 3
    protocol = config.http
    assert isinstance(protocol, type) and issubclass(protocol, BoundedHttp)
    assert (protocol.max_connections, protocol.head_timeout_s, protocol.max_header_bytes) == (
        7,
        2.5,
        2048,
    )


def serve_process(*flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_SERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--repository", str(REPO_ROOT), *flags],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("reuse_port", [False, True])
@pytest.mark.parametrize(
    ("door", "setting"), [("HTTP", "port"), ("V2 gRPC", "grpc_port")], ids=["http", "grpc"]
)
def test_a_port_in_use_is_one_line_naming_it_and_its_setting_and_exit_status_5(
    door: str, setting: str, reuse_port: bool
) -> None:
    # reuse_port: the holder set SO_REUSEPORT, as gRPC does by default; the server's
    # check must still see the port as taken (gRPC itself would share it silently).
    with socket.socket() as holder:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"port": str(free_port()), "grpc_port": str(free_port()), setting: str(taken)}
        done = serve_process("--port", ports["port"], "--grpc-port", ports["grpc_port"])
    flag = "--" + setting.replace("_", "-")
    expected = f"port {taken} ({door}, {flag} / RESNET_SERVE_{setting.upper()}) is in use"
    assert done.returncode == EXIT_PORT_IN_USE, done.stderr
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_exit_statuses_are_distinct_and_help_names_both_ports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.server import EXIT_STARTUP_FAILED

    assert len({EXIT_STARTUP_FAILED, EXIT_DRAIN_CUT, EXIT_PORT_IN_USE, 2}) == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "HTTP on --port (default 8000" in text
    assert "V2 gRPC on --grpc-port (default 8001" in text
    assert f"exit status {EXIT_PORT_IN_USE}" in text


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
