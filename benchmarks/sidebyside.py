"""Our front doors and Triton's, per model, and the phone-photo workload, in one run.

For each model: one of our servers takes every door at every level (small JPEGs),
then, on the first model, the 12 MP phone photos through the JPEG doors; then Triton
(through PyTriton, the same ONNX file and preprocessing: :mod:`benchmarks.triton`)
takes the same requests through its V2 REST and gRPC doors. One load generator for
all (:mod:`benchmarks.http`), so every figure is comparable, and every row carries the
generator's own CPU per request. Ratios to the engine limit and between the servers
are worked out by :mod:`benchmarks.report_sbs` from the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import doors, phone, triton
from benchmarks.inputs import label
from benchmarks.plan import Model, Plan

#: 12 MP photos go in as encoded JPEGs only: FP32 pixels of a crop say nothing new.
PHONE_DOORS = (doors.CLASSIFY_RAW, doors.CLASSIFY, doors.V2_REST_BYTES, doors.V2_GRPC_BYTES)


def _phone_limit(plan: Plan, model: Model, photos: list[Path], results: dict[str, Any]) -> None:
    settings = plan.server_base_settings()
    limit = phone.decode_limit(
        photos, model[0].config.preprocessing, settings, images=plan.phone_decode_images
    )
    print(
        f"== phone photos {limit.width}x{limit.height}: decode limit {limit.images_per_s:.1f} "
        f"img/s on {limit.threads} threads ({limit.cpu_ms_per_image:.0f} CPU-ms/img)",
        flush=True,
    )
    results["phone"]["decode_limit"] = vars(limit)
    results["phone"]["variant"] = label(*model)


def run_side_by_side(
    plan: Plan,
    repository: Path,
    models: list[Model],
    small: list[Path],
    photos: list[Path] | None,
    tmp: Path,
    results: dict[str, Any],
    *,
    sections: set[str],
) -> None:
    """Fills ``results["doors"]``, ``results["triton"]`` and ``results["phone"]``, for the
    ``sections`` asked (``doors``: ours; ``triton``: Triton's; ``phone``: 12 MP photos
    through both, when ``photos`` are given)."""
    with_triton = "triton" in sections
    python = plan.triton_python
    triton_version = triton.version(python) if with_triton else None
    results["triton_version"] = triton_version
    if with_triton and triton_version is None:
        results["notes"].append(
            f"Triton not measured: no PyTriton under {python} "
            "(build it once with `python -m benchmarks.triton --setup`)."
        )
    max_pixels = plan.server_base_settings().max_image_pixels
    for index, model in enumerate(models):
        workloads = []
        if sections & {"doors", "triton"}:
            workloads.append(doors.Workload("small", small, doors.DOORS, plan.doors_concurrency))
        if photos and index == 0:
            _phone_limit(plan, model, photos, results)
            workloads.append(doors.Workload("phone", photos, PHONE_DOORS, [plan.phone_concurrency]))
        name = label(*model)
        # Our server takes the small images only when its doors were asked for.
        workloads_ours = [w for w in workloads if w.name != "small" or "doors" in sections]
        if workloads_ours and plan.time_left(f"front doors {name}"):
            ours = doors.run_doors(
                repository,
                model,
                workloads_ours,
                tmp / f"server-doors-{index}.log",
                settings=plan.server_settings,
                max_pixels=max_pixels,
                budget=plan.doors_budget,
                cpus=plan.server_cpus,
                time_left=plan.time_left,
            )
            results["doors"] += ours.get("small", [])
            results["phone"]["rows"] += ours.get("phone", [])
        if triton_version and workloads and plan.time_left(f"triton {name}"):
            theirs = triton.run_triton(
                python,
                repository,
                model,
                workloads,
                tmp / f"triton-{index}.log",
                max_pixels=max_pixels,
                budget=plan.doors_budget,
                time_left=plan.time_left,
            )
            results["triton"] += theirs.get("small", [])
            results["phone"]["rows"] += theirs.get("phone", [])
