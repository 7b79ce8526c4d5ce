"""The service under test, as a real ``resnet-serve serve`` child process.

A separate process so that server and load generator never share a GIL; its CPU time is
read from the OS so the report can say how the two cores were shared.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.inputs import REPO_ROOT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchServer:
    """``with BenchServer(repo, log, {"max_batch_size": "1"}) as server: ...``."""

    def __init__(
        self,
        repository: Path,
        log_path: Path,
        settings: dict[str, str],
        *,
        cpus: str | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.settings = dict(settings)
        self.ready_timeout_s = ready_timeout_s
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_SERVE_")}
        env.update({f"RESNET_SERVE_{k.upper()}": v for k, v in settings.items()})
        env.update(
            RESNET_SERVE_REPOSITORY=str(repository),
            RESNET_SERVE_HOST="127.0.0.1",
            RESNET_SERVE_PORT=str(self.port),
            RESNET_SERVE_LOG_LEVEL="warning",
        )
        command = [sys.executable, "-m", "service.cli", "serve"]
        if cpus:
            command = ["taskset", "-c", cpus, *command]
        self._env = env
        self._command = command
        self._log = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchServer:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self._command, cwd=REPO_ROOT, env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {self.ready_timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def models(self) -> list[dict[str, object]]:
        return list(httpx.get(f"{self.url}/models", timeout=10).json()["models"])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(httpx.get(f"{self.url}/metrics", timeout=10).text, name, **labels)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a /metrics text."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
