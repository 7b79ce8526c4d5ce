"""``python -m benchmarks.run`` (``make bench``): engine, preprocessing, HTTP, doors.

One run measures, on this machine: the bare engine per batch size (the limit), the
preprocessing cost, and the service over HTTP per concurrency with batching on and off;
then prints and writes the three ratios that say what the service costs over the limit;
then every front door (``/classify``, V2 REST, V2 gRPC) on one server, side by side.
Every cell is bounded in count and time (see :mod:`benchmarks.plan`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks import machine, report, report_doors
from benchmarks.inputs import (
    DEFAULT_CACHE,
    LARGE_SIZE,
    SMALL_SIZE,
    Variant,
    ensure_models,
    label,
    make_jpegs,
    source_photos,
    user_images,
)
from benchmarks.options import DEFAULT_VARIANTS, add_arguments
from benchmarks.plan import Plan, run_engines, run_http, run_preprocess
from benchmarks.sidebyside import run_side_by_side


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    plan = Plan.from_args(args)
    results: dict[str, Any] = {
        "schema": 1,
        "date": date.today().isoformat(),
        "command": " ".join(["python -m benchmarks.run", *args.argv]),
        "mode": "quick" if args.quick else "full",
        "machine": machine.describe(),
        "load_before": machine.load_average(),
        "config": plan.describe(),
        "weights": {},
        "served": {},
        "engine": [],
        "engine_skipped": [],
        "preprocess": [],
        "http": [],
        "doors": [],
        "triton": [],
        "phone": {"decode_limit": None, "rows": []},
        "notes": [],
    }
    print(f"load average before: {results['load_before']} on {machine.cores()} cores")
    variants = args.variant or [Variant(v) for v in DEFAULT_VARIANTS]
    if args.repository == DEFAULT_CACHE:  # never export into a repository the user named
        ensure_models(args.repository, variants, ("onnx", "torchscript"))
    models = [v.resolve(args.repository) for v in variants]
    for entry, version in models:
        results["weights"][label(entry, version)] = version.info.weights.display
    with tempfile.TemporaryDirectory(prefix="resnet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        photos = source_photos(args.photos)
        if args.images:
            small = user_images(args.images)
        else:
            small = make_jpegs(photos, tmp / "small", SMALL_SIZE, plan.small_images)
        sections = set(args.sections.split(","))
        if "engine" in sections:
            run_engines(plan, models, small, results)
        if "preprocess" in sections:
            large = make_jpegs(photos, tmp / "large", LARGE_SIZE, plan.large_images)
            run_preprocess(plan, models[0][0], small, large, results)
        if "http" in sections:
            run_http(plan, args.repository, models, small, tmp, results)
        photos_12mp = None
        if "phone" in sections:
            photos_12mp = make_jpegs(photos, tmp / "phone", LARGE_SIZE, plan.phone_images)
        if sections & {"doors", "triton", "phone"}:
            run_side_by_side(
                plan, args.repository, models, small, photos_12mp, tmp, results,
                sections=sections,
            )  # fmt: skip
    results["ratios"] = report.ratios(results)
    results["side_by_side"] = report_doors.summary(results)
    results["load_after"] = machine.load_average()
    results["duration_s"] = time.monotonic() - started
    _notes(results, plan)
    stem = args.name or "-".join(
        [machine.slug(), results["date"], *(["quick"] if args.quick else [])]
    )
    json_path, md_path = report.write(results, args.output_dir, stem)
    print()
    print("\n".join(report.headline(results)))
    print("\n".join(f"- {n}" for n in results["notes"]))
    print(f"\nwrote {md_path} and {json_path} in {results['duration_s']:.0f} s")
    return 0


def _notes(results: dict[str, Any], plan: Plan) -> None:
    notes = results["notes"]
    random = [k for k, v in results["weights"].items() if v.startswith("random")]
    if random:
        notes.append(f"{', '.join(random)}: random (untrained) weights — fine for speed.")
    notes.append(
        "service / limit: service img/s at its best concurrency over the engine's img/s at "
        "its best batch size (same engine, same cores; the HTTP client's CPU share is in "
        "the HTTP table)."
    )
    notes.append(
        "same, by CPU time: engine CPU-ms per image (best batch) over server + client CPU-ms "
        "per image (best level): the ratio with the machine to itself, robust to other load."
    )
    notes.append(
        "c1 overhead: service p50 at concurrency 1 minus engine batch-1 p50 (in-process). "
        "vs own engine time: minus the engine time of the same requests inside the server, "
        "measured in the same moment; in brackets, the image decode it includes."
    )
    if results["doors"]:
        notes.append(
            "front doors: goodput (img/s of 200/OK answers); x engine limit: over bare ONNX "
            "Runtime at its best batch, this run; client CPU: the load generator's own CPU "
            "time per request (all its threads) and its share of the machine."
        )
    if plan.off_concurrency:
        notes.append(
            "batching on / off: img/s at the same concurrency (>= 16) with "
            "max_batch_size=1 on the second server."
        )
    load = max(results["load_before"][0], results["load_after"][0])
    if load > machine.cores() * 0.5:
        notes.append(
            f"load average reached {load} on {machine.cores()} cores during the "
            "run: other work shared the CPU, so wall-clock figures (and their ratios) are "
            "noisy; trust the CPU-time columns."
        )
    if plan.skipped:
        notes.append("skipped (run deadline reached): " + "; ".join(plan.skipped))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
