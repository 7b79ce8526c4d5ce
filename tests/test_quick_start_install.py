"""`make serve` keeps PyTorch out of the serving environment and serves what was asked.

The Makefile is read with ``make -n`` (what it would run, nothing installed), and
``scripts/torch_source.py`` (where the export environment takes PyTorch from) is run
against a local index that answers and a port that does not.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from benchmarks.harness import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCH_SOURCE = REPO_ROOT / "scripts" / "torch_source.py"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str, tmp_path: Path) -> list[str]:
    """The commands `make serve` would run in a fresh checkout (venvs in tmp_path)."""
    result = subprocess.run(
        [
            "make",
            "-n",
            "serve",
            f"VENV={tmp_path / 'serve-venv'}",
            f"EXPORT_VENV={tmp_path / 'export-venv'}",
            f"REPOSITORY={tmp_path / 'models'}",
            *args,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [" ".join(line.split()) for line in result.stdout.replace("\\\n", " ").splitlines()]


def test_serving_environment_gets_the_light_install_only(tmp_path: Path) -> None:
    lines = dry_run(tmp_path=tmp_path)
    serve_python = str(tmp_path / "serve-venv" / "bin" / "python")
    installs = [line for line in lines if line.startswith(f"{serve_python} -m pip install")]
    assert any('".[cpu]"' in line for line in installs), installs
    for line in installs:
        assert "torch" not in line and "export" not in line, line
    export_python = str(tmp_path / "export-venv" / "bin" / "python")
    torch_line = next(line for line in lines if line.startswith(f"{export_python} -m pip"))
    assert "scripts/torch_source.py" in torch_line and "torch==" in torch_line
    exporter = str(tmp_path / "export-venv" / "bin" / "resnet-serve")
    assert any(line.startswith(f"{exporter} export resnet50 ") for line in lines)


def test_serve_passes_the_model_and_both_ports(tmp_path: Path) -> None:
    lines = dry_run("MODEL=resnet18", "PORT=9000", "GRPC_PORT=9001", tmp_path=tmp_path)
    (serve,) = [line for line in lines if " serve --repository " in line]
    for flag in ('--models "resnet18"', '--default-model "resnet18"', "--port 9000"):
        assert flag in serve, serve
    assert "--grpc-port 9001" in serve, serve
    exports = [line for line in lines if " export " in line]
    assert len(exports) == 1 and " export resnet18 " in exports[0], exports


def test_several_models_are_each_exported_and_all_loaded(tmp_path: Path) -> None:
    lines = dry_run("MODELS=resnet18,resnet20", "MODEL=resnet20", tmp_path=tmp_path)
    exported = sorted(line.split(" export ")[1].split()[0] for line in lines if " export " in line)
    assert exported == ["resnet18", "resnet20"]
    (serve,) = [line for line in lines if " serve --repository " in line]
    assert '--models "resnet18,resnet20" --default-model "resnet20"' in serve, serve


def torch_source(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TORCH_SOURCE), "--timeout-s", "5", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


@pytest.fixture
def cpu_index(tmp_path: Path) -> Iterator[str]:
    """A wheel index on 127.0.0.1 with a torch project page, like PyTorch's CPU index."""
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<html></html>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def test_cpu_wheels_when_the_cpu_index_answers(cpu_index: str, tmp_path: Path) -> None:
    result = torch_source("--index", cpu_index, "--driver-file", str(tmp_path / "none"))
    assert result.stdout.split() == ["--index-url", cpu_index]
    assert "CPU wheels" in result.stderr


def test_ordinary_index_when_the_cpu_index_does_not_answer(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/whl/cpu"
    result = torch_source("--index", closed, "--driver-file", str(tmp_path / "none"))
    assert result.stdout.strip() == ""
    assert "did not answer" in result.stderr and "ordinary index" in result.stderr


def test_ordinary_index_when_an_nvidia_driver_is_loaded(cpu_index: str, tmp_path: Path) -> None:
    driver = tmp_path / "version"
    driver.write_text("NVRM version: 580\n")
    result = torch_source("--index", cpu_index, "--driver-file", str(driver))
    assert result.stdout.strip() == "" and "NVIDIA driver found" in result.stderr


def test_an_empty_index_setting_means_the_ordinary_index(tmp_path: Path) -> None:
    result = torch_source("--index", "", "--driver-file", str(tmp_path / "none"))
    assert result.stdout.strip() == ""
