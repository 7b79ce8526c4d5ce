"""The short CI version of the soak run (``scripts/soak.py``; the long run is documented)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import REPO_ROOT


@pytest.mark.slow
def test_short_soak_has_no_failures_and_rss_levels_off(
    model_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "soak.py"),
            "--repository",
            str(model_repository),
            "--duration-s",
            "20",
            "--concurrency",
            "4",
            "--max-requests",
            "20000",
            "--max-growth-mib",
            "48",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(result.stdout)
    assert result.returncode == 0, (result.stdout, result.stderr[-2000:])
    report = json.loads(out.read_text())
    assert report["failures"] == 0 and report["server_exit_code"] == 0
    assert len(report["rss_samples"]) >= 10
    assert report["rss_growth_mib"] <= 48
    statuses = {key.split()[1] for key in report["counts"]}
    # Both kinds of traffic were really sent: classified images and refused inputs.
    assert {"200", "400", "404", "413", "415", "422"} <= statuses, report["counts"]
