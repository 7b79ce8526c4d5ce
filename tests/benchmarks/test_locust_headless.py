"""The Locust file, run headless for a few seconds against a real server."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.harness import REPO_ROOT, ServerProcess


@pytest.mark.parametrize(
    ("protocol", "endpoint"),
    [("classify", "/classify [2 img]"), ("v2-rest", "/v2/models/{model}/infer [2 img]")],
)
def test_locust_headless_run_succeeds_without_failures(
    model_repository: Path,
    photos_dir: Path,
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
    protocol: str,
    endpoint: str,
) -> None:
    server = start_server(model_repository)
    prefix = tmp_path / "locust"
    completed = subprocess.run(
        [
            sys.executable, "-m", "locust",
            "-f", str(REPO_ROOT / "loadtest" / "locustfile.py"),
            "--headless", "-u", "4", "-r", "4", "-t", "5s",
            "--host", server.url,
            "--csv", str(prefix),
            "--images", str(photos_dir),
            "--model", "resnet18",
            "--images-per-request", "2",
            "--protocol", protocol,
            "--only-summary",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    with (tmp_path / "locust_stats.csv").open(newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
    assert endpoint in rows
    # The server saw them through that door: two images per request, all classified.
    assert server.metric(
        "resnet_serve_images_total", model="resnet18", protocol=protocol
    ) >= 2 * int(total["Request Count"])
