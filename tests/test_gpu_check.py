"""scripts/gpu-check.sh end to end in its CPU dry run: the one GPU command, proven here.

The dry run takes every step the GPU run takes (detect, export, the gpu tests, the
benchmark, the report) with the torch backend and the engines on CPU and tiny budgets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = REPO_ROOT / "scripts" / "gpu-check.sh"


def test_the_cpu_dry_run_takes_every_step_and_writes_its_table(
    tmp_path: Path, shared_dir: Path
) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path),
        "RESNET_SERVE_SHARED_DIR": str(shared_dir),
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [str(SCRIPT), "--cpu-dry-run"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = (tmp_path / "gpu-check-dry-run.md").read_text()
    for step in ("export", "gpu-tests", "benchmark"):
        assert f"| {step} | ok |" in report
    assert "| torchscript | cpu | fp32 | 4 |" in report  # engine limit, largest batch
    assert "| torch, batches of 4 | cpu |" in report  # the GPU backend's code, on CPU
    assert "torch on cpu" in report  # the service with the torch backend
    assert "this is the CPU dry run" in report  # never passes for a GPU run
    assert (tmp_path / "gpu-check-dry-run.json").is_file()


def test_an_unknown_argument_is_refused() -> None:
    done = subprocess.run(
        [str(SCRIPT), "--gpu-wet-run"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 64 and "--cpu-dry-run" in done.stderr
