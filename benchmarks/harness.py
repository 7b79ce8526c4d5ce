"""One real ``resnet-serve serve`` process on 127.0.0.1, for tests, benchmarks and the soak.

The tests over HTTP, ``python -m benchmarks.run`` and ``scripts/soak.py`` all need the
same things from a server they start: a free loopback port, readiness (failing early,
with the log, if the process dies), a /metrics scrape, its memory, and a stop by PID
that returns the exit code. They share this one module so a change to how the server
starts (a new port, a new setting) is made once.

Settings are passed as ``RESNET_SERVE_*`` environment variables, exactly as an operator
would, and every ``RESNET_SERVE_*`` variable of the calling shell is dropped first so a
developer's environment cannot leak into a test. A separate process (not an in-process
app) so that server and load generator never share a GIL, and so its CPU time and RSS
are the server's own, read from /proc (Linux).

Source tree only: this package is not shipped in the wheel.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "RESNET_SERVE_"


def free_port() -> int:
    """A loopback port free right now (the OS picks it; a small race is accepted)."""
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
        time.sleep(0.1)  # polling an external process: there is no event to wait on
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s:\n{logs()}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a /metrics text.

    A sum, not one sample: a metric without a label filter (or with a partial one) adds
    up over the label values it was not asked about (e.g. every status of a model).
    """
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    """Resident set size now (``VmRSS``)."""
    return _proc_status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size since the process started (``VmHWM``, kept by the
    kernel): a peak between two samples is not missed."""
    return _proc_status_kib(pid, "VmHWM") * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (``/proc/<pid>/stat``)."""
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (a recorded value, never interpolated); NaN for no values.

    The rank is ``ceil(fraction * n)``; the small epsilon keeps float error (0.99 * 100 is
    99.00000000000001) from pushing it one rank up.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[max(0, min(len(ordered) - 1, rank - 1))]


class ServerProcess:
    """``python -m service.cli serve`` with ``settings`` as ``RESNET_SERVE_*`` variables.

    The process starts in the constructor; ``wait_ready()`` waits for /health/ready.
    As a context manager it also waits ready on entry and stops on exit. The gRPC port
    is a free one unless ``grpc_port`` is given, so servers started side by side (tests
    in parallel, a benchmark beside a test) never collide on the server's default.
    ``cpus`` pins the server with ``taskset`` (e.g. ``"0-1"``). ``source`` is the source
    tree whose ``service`` runs (default: this checkout; another commit's tree for an A/B).
    """

    def __init__(
        self,
        repository: Path,
        log_path: Path,
        *,
        grpc_port: int | None = None,
        cpus: str | None = None,
        source: Path = REPO_ROOT,
        **settings: Any,
    ) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc_port is None else grpc_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update({f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in settings.items()})
        env.update(
            {
                f"{ENV_PREFIX}REPOSITORY": str(repository),
                f"{ENV_PREFIX}HOST": "127.0.0.1",
                f"{ENV_PREFIX}PORT": str(self.port),
                f"{ENV_PREFIX}GRPC_PORT": str(self.grpc_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        command = [sys.executable, "-m", "service.cli", "serve"]
        if cpus:
            command = ["taskset", "-c", cpus, *command]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=source, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_ready()
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

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until /health/ready answers 200 (models loaded and warmed up)."""
        wait_http_ok(f"{self.url}/health/ready", self.process, timeout_s, self.logs)

    def wait_live(self, timeout_s: float = 30.0) -> None:
        """Until /health/live answers 200 (the HTTP server is up, models may still load)."""
        wait_http_ok(f"{self.url}/health/live", self.process, timeout_s, self.logs)

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
        return metric_value(httpx.get(f"{self.url}/metrics", timeout=10).text, name, **labels)

    def models(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/models", timeout=10).json()["models"])

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)
