"""Our front doors and Triton's, per model, and the phone-photo workload, in one run.

For each model, our server and Triton (through PyTriton, the same ONNX file and
preprocessing: :mod:`benchmarks.triton`) are both started, then take the same requests
level by level, interleaved (:func:`benchmarks.doors.run_workloads`): every door of ours
and Triton's V2 REST and gRPC doors at one level, then the next level; small JPEGs, then,
on the first model, the 12 MP phone photos through the JPEG doors. An idle server costs
next to no CPU, and on a shared machine interleaving keeps the figures compared seconds
apart. One load generator for all (:mod:`benchmarks.http`), so every figure is
comparable, and every row carries the generator's own CPU per request. Ratios to the
engine limit and between the servers are worked out by :mod:`benchmarks.report_doors`.
"""

from __future__ import annotations

from contextlib import ExitStack
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
        small_on = tuple(
            server for server, section in ((doors.OURS, "doors"), (triton.TRITON, "triton"))
            if section in sections
        )  # fmt: skip
        if small_on:
            levels = plan.doors_concurrency
            workloads.append(doors.Workload("small", small, doors.DOORS, levels, small_on))
        if photos and index == 0:
            _phone_limit(plan, model, photos, results)
            workloads.append(doors.Workload("phone", photos, PHONE_DOORS, [plan.phone_concurrency]))
        name = label(*model)
        targets = []
        with ExitStack() as stack:
            if (photos or "doors" in sections) and plan.time_left(f"front doors {name}"):
                log = tmp / f"server-doors-{index}.log"
                settings, cpus = plan.server_settings, plan.server_cpus
                ours = doors.our_server(repository, model, log, settings=settings, cpus=cpus)
                targets.append(stack.enter_context(ours))
            if triton_version and workloads and plan.time_left(f"triton {name}"):
                log = tmp / f"triton-{index}.log"
                targets.append(
                    stack.enter_context(triton.triton_server(python, repository, model, log))
                )
            servers = " and ".join(t.server for t in targets)
            print(f"== {servers}, {name}: levels interleaved", flush=True)
            rows = doors.run_workloads(
                targets,
                model,
                workloads,
                max_pixels=max_pixels,
                budget=plan.doors_budget,
                time_left=plan.time_left,
                rounds=plan.doors_rounds,
            )
        ours_rows = rows.get(doors.OURS, {})
        results["doors"] += ours_rows.get("small", [])
        results["phone"]["rows"] += ours_rows.get("phone", [])
        theirs = rows.get(triton.TRITON, {})
        results["triton"] += theirs.get("small", [])
        results["phone"]["rows"] += theirs.get("phone", [])
