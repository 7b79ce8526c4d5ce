"""Triton through PyTriton, driven by our load generator: it serves our model and is
measured like our server. Skipped where PyTriton's venv was not built
(``python -m benchmarks.triton --setup``): it is an optional baseline, not a dependency."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import doors, http, triton
from benchmarks.inputs import SMALL_SIZE, Variant, make_jpegs, source_photos
from benchmarks.options import TRITON_PYTHON

pytestmark = pytest.mark.skipif(
    triton.version(TRITON_PYTHON) is None,
    reason=f"no PyTriton under {TRITON_PYTHON} (python -m benchmarks.triton --setup)",
)


def test_triton_serves_our_model_through_both_v2_doors(
    model_repository: Path, photos_dir: Path, tmp_path: Path
) -> None:
    model = Variant("resnet18").resolve(model_repository)
    images = make_jpegs(source_photos(photos_dir), tmp_path / "jpegs", SMALL_SIZE, 2)
    work = doors.Workload("small", images, doors.DOORS, [2])
    budget = http.LoadBudget(max_requests=6, max_time_s=3.0, warmup_s=0.0, timeout_s=60.0)
    rows = triton.run_triton(
        TRITON_PYTHON,
        model_repository,
        model,
        [work],
        tmp_path / "triton.log",
        max_pixels=10**8,
        budget=budget,
    )["small"]
    # Only the doors Triton has, in our order.
    assert [(r["door"], r["input"]) for r in rows] == [("v2-rest", "BYTES"), ("v2-grpc", "BYTES")]
    for row in rows:
        assert row["server"] == "triton" and row["variant"] == "resnet18:1"
        assert row["errors"] == 0, row["error_codes"]
        assert row["ok"] == row["requests"] == 6
        # Batches counted by Triton's own counters; CPU over its whole process tree.
        assert 1 <= row["mean_batch_size"] <= 2
        assert row["server_cpu_ms_per_image"] > 0 and row["client_cpu_ms_per_request"] > 0
