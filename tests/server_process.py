"""A real ``resnet-serve serve`` process on 127.0.0.1 for tests that go over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(
    url: str, process: subprocess.Popen[bytes], timeout_s: float, logs: Callable[[], str]
) -> None:
    """Poll ``url`` until it answers 200; fail early with the logs if ``process`` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{logs()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s:\n{logs()}")


class ServerProcess:
    """Starts the server with settings given as RESNET_SERVE_* environment variables."""

    def __init__(self, repository: Path, log_path: Path, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_SERVE_")}
        env.update(
            {
                "RESNET_SERVE_REPOSITORY": str(repository),
                "RESNET_SERVE_HOST": "127.0.0.1",
                "RESNET_SERVE_PORT": str(self.port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Servers run side by side: each gets its own V2 gRPC port unless a test picks one.
        settings.setdefault("grpc_port", free_port())
        self.grpc_port = int(settings["grpc_port"])
        env.update({f"RESNET_SERVE_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        wait_http_ok(f"{self.url}/health/ready", self.process, timeout_s, self.logs)

    def wait_live(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"server not live after {timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait; returns the exit code (kills after the timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching ``labels`` from a live /metrics scrape."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total
