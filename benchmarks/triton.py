"""Triton through PyTriton, measured with our load generator beside our server.

``python -m benchmarks.triton --setup`` builds the interpreter Triton runs under
(:data:`TRITON_PYTHON`), once; ``make bench`` then measures Triton whenever it exists.

Why a second interpreter: PyTriton 0.7 (Triton 2.51) requires ``numpy<2`` and its
Python-backend stub, built against NumPy 1, misreads ``BYTES`` tensors under NumPy 2
(it crashes on the first encoded image). Our venv runs NumPy 2, and downgrading it would
change what every other test and benchmark measures. So Triton gets its own small venv,
holding only ``numpy<2`` and ``nvidia-pytriton``; a ``.pth`` file appended last lets it
import everything else (ONNX Runtime, Pillow, the service) from our venv, so Triton runs
the very same engine and preprocessing code (:mod:`benchmarks.triton_server`).

Triton's CPU time is that of its whole process tree (``tritonserver``, the Python
backend stub, PyTriton's proxy running our function), read with psutil at the window's
edges; its batch sizes come from its Prometheus counters (images over executions).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from benchmarks import doors, http
from benchmarks.harness import REPO_ROOT, free_port, metric_value, wait_http_ok
from benchmarks.inputs import label
from benchmarks.options import TRITON_PYTHON
from service.repository import ModelEntry, ModelVersion

TRITON = "triton"
#: The doors Triton has: V2 REST (binary tensor extension) and V2 gRPC, JPEG as BYTES.
DOORS = (doors.V2_REST_BYTES, doors.V2_GRPC_BYTES)
PACKAGES = ("numpy<2", "nvidia-pytriton>=0.7")


def setup(venv: Path) -> Path:
    """Build the venv Triton runs under; returns its interpreter."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # "zz-": .pth files are read in name order; ours comes last, after numpy<2.
    (Path(site) / "zz-resnet-serve-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def version(python: Path) -> str | None:
    """The installed PyTriton's version, or None when ``python`` cannot import it."""
    if not python.is_file():
        return None
    probe = "from importlib.metadata import version; print(version('nvidia-pytriton'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


class TritonProcess:
    """``python -m benchmarks.triton_server`` on free loopback ports, stopped by SIGTERM
    to its own process group (tritonserver and the proxy are its children)."""

    def __init__(
        self, python: Path, repository: Path, model: str, version: int, log_path: Path
    ) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.model, self.version, self.log_path = model, version, log_path
        libdir = sysconfig.get_config_var("LIBDIR")  # tritonserver links libpython
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
        )
        command = [str(python), "-m", "benchmarks.triton_server", "--repository", str(repository)]
        command += ["--model", model, "--version", str(version)]
        command += ["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        command += ["--metrics-port", str(self.metrics_port)]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def __enter__(self) -> TritonProcess:
        url = f"http://127.0.0.1:{self.http_port}/v2/models/{self.model}/ready"
        try:
            wait_http_ok(url, self.process, 240.0, self.logs)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class TritonProbe:
    """CPU time of Triton's process tree; batch sizes from its Prometheus counters."""

    def __init__(self, triton: TritonProcess) -> None:
        self.triton = triton
        self.root = psutil.Process(triton.process.pid)

    def server_cpu_s(self) -> float:
        total = 0.0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def server_threads(self) -> None:
        """Triton's threads are not ours to name: no per-thread split."""
        return None

    async def batch_counters(self) -> tuple[float, float]:
        url = f"http://127.0.0.1:{self.triton.metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(url)).text
        labels = {"model": self.triton.model, "version": str(self.triton.version)}
        return (
            # Counters: the exposition parser names their samples ``<family>_total``.
            metric_value(text, "nv_inference_count_total", **labels),
            metric_value(text, "nv_inference_exec_count_total", **labels),
        )


@contextmanager
def triton_server(
    python: Path, repository: Path, model: tuple[ModelEntry, ModelVersion], log: Path
) -> Iterator[doors.Target]:
    """Triton serving ``model`` through PyTriton, as a load target (its V2 doors)."""
    entry, chosen = model
    name, number = entry.config.name, chosen.info.version
    with TritonProcess(python, repository, name, number, log) as triton:
        probe = TritonProbe(triton)
        yield doors.Target(TRITON, triton.http_port, triton.grpc_port, name, number, probe, DOORS)


def run_triton(
    python: Path,
    repository: Path,
    model: tuple[ModelEntry, ModelVersion],
    workloads: Sequence[doors.Workload],
    log: Path,
    *,
    max_pixels: int,
    budget: http.LoadBudget,
    time_left: Callable[[str], bool] = lambda _: True,
) -> dict[str, list[dict[str, Any]]]:
    """The workloads through Triton's doors alone (those of :data:`DOORS` they name)."""
    print(f"== {TRITON} (PyTriton {version(python)}) {label(*model)}", flush=True)
    with triton_server(python, repository, model, log) as target:
        return doors.run_workloads(
            [target], model, workloads, max_pixels=max_pixels, budget=budget, time_left=time_left
        )[TRITON]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triton", description=__doc__)
    parser.add_argument("--setup", action="store_true", help="build the Triton venv")
    parser.add_argument("--venv", type=Path, default=TRITON_PYTHON.parents[1])
    args = parser.parse_args(argv)
    if args.setup:
        python = setup(args.venv)
        print(f"PyTriton {version(python)} ready: {python}")
    else:
        print(version(args.venv / "bin" / "python") or "not installed: run with --setup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
