"""``python -m benchmarks.int8``: fp32 vs int8, engine limit and HTTP, side by side.

A thin layer over the main benchmark (:mod:`benchmarks.run`): it makes sure the cache
repository holds an int8 version of each model (``resnet-serve quantize``, calibrated on
the shared photos), runs the engine and HTTP sections for the fp32 and int8 versions in
one run, and adds the comparison the int8 issue asks for: int8 over HTTP against the
fp32 engine limit (target: at least 2x).

The cached models have random weights (no network for pretrained ones): their int8
agreement and accuracy mean nothing and the gate is off here; speed does not depend on
weight values. Accuracy is measured on the pretrained CIFAR ResNet-20 instead
(tests/quantize, docs/QUANTIZATION.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.inputs import DEFAULT_PHOTOS, REPO_ROOT, Variant, ensure_models
from benchmarks.options import RESULTS_DIR
from benchmarks.run import main as run_benchmark
from service.repository import load_model
from service.settings import Settings

ARCHS = ("resnet18", "resnet50")
#: Its own cache: the main benchmark's server loads every version in its repository, so
#: int8 versions there would change its runs.
INT8_CACHE = REPO_ROOT / ".cache" / "bench-models-int8"
TARGET = 2.0


def ensure_int8(repository: Path, name: str, photos: Path) -> tuple[int, int]:
    """(fp32 version, int8 version) of ``name``; quantizes once if no int8 exists yet.

    ``--keep-default`` pins the fp32 version as the model's default, so the main
    benchmark (which measures default versions) keeps measuring fp32.
    """
    entry = load_model(repository / name)
    fp32 = next(v.info.version for v in entry.versions if v.info.precision == "fp32")
    int8 = [v.info.version for v in entry.versions if v.info.precision == "int8"]
    if int8:
        return fp32, int8[-1]
    command = [sys.executable, "-m", "service.cli", "quantize", name, "--version", str(fp32)]
    command += ["--calibration", str(photos), "--repository", str(repository)]
    command += ["--min-agreement", "0", "--keep-default"]
    print(f"quantizing {name} v{fp32} (calibration: {photos}) ...", flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    entry = load_model(repository / name)
    return fp32, next(v.info.version for v in entry.versions if v.info.precision == "int8")


def interleaved(
    repository: Path, pairs: dict[str, tuple[int, int]], batch_sizes: list[int], seconds: float
) -> list[dict[str, Any]]:
    """fp32 and int8 engine img/s measured in alternating ~0.3 s slices (medians).

    On a shared machine, load that comes and goes skews two sequential measurements
    differently; alternating slices expose both models to the same load, so their
    ratio holds even when the absolute figures are pessimistic. Bounded: ``seconds``
    per (model, batch size) cell.
    """
    import numpy as np

    from service.engines import create_engine

    settings = Settings()
    rows = []
    for arch, versions in pairs.items():
        entry = load_model(repository / arch)
        chosen = [v for v in entry.versions if v.info.version in versions]
        engines = [create_engine(entry.config, v, settings) for v in chosen]
        size = entry.config.preprocessing.crop_size
        try:
            for batch_size in batch_sizes:
                batch = np.random.default_rng(0).standard_normal(
                    (batch_size, 3, size, size), dtype=np.float32
                )
                rates: list[list[float]] = [[] for _ in engines]
                for engine in engines:
                    engine.run(batch)
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline or not rates[0]:
                    for engine, got in zip(engines, rates, strict=True):
                        started, runs = time.perf_counter(), 0
                        while runs < 1 or (time.perf_counter() - started < 0.3 and runs < 64):
                            engine.run(batch)
                            runs += 1
                        got.append(runs * batch_size / (time.perf_counter() - started))
                medians = [statistics.median(r) for r in rates]
                row = {"arch": arch, "batch_size": batch_size, "slices": len(rates[0])}
                for version, median in zip(chosen, medians, strict=True):
                    row[f"{version.info.precision}_images_per_s"] = median
                row["int8_over_fp32"] = row["int8_images_per_s"] / row["fp32_images_per_s"]
                rows.append(row)
                print(
                    f"  interleaved {arch} batch {batch_size:>3}: fp32 "
                    f"{row['fp32_images_per_s']:.1f}  int8 {row['int8_images_per_s']:.1f} "
                    f"img/s  ({row['int8_over_fp32']:.2f}x)",
                    flush=True,
                )
        finally:
            for engine in engines:
                engine.close()
    return rows


def _best(rows: list[dict[str, Any]], variant: str) -> dict[str, Any] | None:
    mine = [r for r in rows if r["variant"] == variant]
    return max(mine, key=lambda r: r["images_per_s"]) if mine else None


def compare(results: dict[str, Any], pairs: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Per architecture: engine limits, HTTP throughput, and the int8 HTTP / fp32 limit."""
    engine = [r for r in results["engine"] if r["engine"] == "onnxruntime"]
    rows = []
    for arch, (fp32, int8) in pairs.items():
        e32, e8 = _best(engine, f"{arch}:{fp32}"), _best(engine, f"{arch}:{int8}")
        h32, h8 = _best(results["http"], f"{arch}:{fp32}"), _best(results["http"], f"{arch}:{int8}")
        row: dict[str, Any] = {"arch": arch, "fp32_version": fp32, "int8_version": int8}
        if e32 and e8:
            row.update(
                fp32_engine_images_per_s=e32["images_per_s"],
                fp32_engine_batch=e32["batch_size"],
                int8_engine_images_per_s=e8["images_per_s"],
                int8_engine_batch=e8["batch_size"],
                engine_speedup=e8["images_per_s"] / e32["images_per_s"],
            )
        if h32:
            row.update(fp32_http_images_per_s=h32["images_per_s"])
        if h8:
            row.update(int8_http_images_per_s=h8["images_per_s"], int8_http_conc=h8["concurrency"])
        if e32 and h8:
            row["int8_http_over_fp32_limit"] = h8["images_per_s"] / e32["images_per_s"]
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def f(row: dict[str, Any], key: str, digits: int = 1) -> str:
        return f"{row[key]:.{digits}f}" if key in row else "–"

    lines = [
        "",
        "## int8 vs fp32 (ONNX Runtime, static QDQ, U8S8 per-channel)",
        "",
        "| model | fp32 engine limit img/s | int8 engine limit img/s | engine speed-up | "
        "fp32 HTTP img/s | int8 HTTP img/s | int8 HTTP / fp32 limit (target >= 2x) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = ""
        if "int8_http_over_fp32_limit" in r:
            verdict = " (met)" if r["int8_http_over_fp32_limit"] >= TARGET else " (NOT met)"
        lines.append(
            f"| {r['arch']} v{r['fp32_version']} / v{r['int8_version']} "
            f"| {f(r, 'fp32_engine_images_per_s')} @ b{r.get('fp32_engine_batch', '–')} "
            f"| {f(r, 'int8_engine_images_per_s')} @ b{r.get('int8_engine_batch', '–')} "
            f"| {f(r, 'engine_speedup', 2)}x | {f(r, 'fp32_http_images_per_s')} "
            f"| {f(r, 'int8_http_images_per_s')} @ c{r.get('int8_http_conc', '–')} "
            f"| **{f(r, 'int8_http_over_fp32_limit', 2)}x**{verdict} |"
        )
    return "\n".join(lines)


def interleaved_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "",
        "### Engine limit, fp32 and int8 interleaved (same load for both)",
        "",
        "| model | batch | fp32 img/s | int8 img/s | int8 / fp32 | slices |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['arch']} | {r['batch_size']} | {r['fp32_images_per_s']:.1f} "
        f"| {r['int8_images_per_s']:.1f} | **{r['int8_over_fp32']:.2f}x** | {r['slices']} |"
        for r in rows
    ]
    lines += [
        "",
        "- Produced by `python -m benchmarks.int8` (this section; the sections above are "
        "the main benchmark it runs). Check the load average above before comparing runs.",
        "- int8 versions: `resnet-serve quantize NAME --calibration <shared photos>` "
        "(percentile calibration). Random weights: their agreement/accuracy are "
        "meaningless and the gate was off (`--min-agreement 0`); accuracy is measured on "
        "the pretrained CIFAR ResNet-20 (docs/QUANTIZATION.md).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__)
    parser.add_argument("--repository", type=Path, default=INT8_CACHE)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--concurrency", default="16,32")
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the harness")
    parser.add_argument(
        "--ab-seconds", type=float, default=12.0, help="per interleaved cell (default 12)"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.ab_seconds = min(args.ab_seconds, 1.0)

    ensure_models(args.repository, [Variant(a) for a in ARCHS], ("onnx",))
    pairs = {arch: ensure_int8(args.repository, arch, args.photos) for arch in ARCHS}
    stem = "-".join(["int8", machine.slug(), _today(), *(["quick"] if args.quick else [])])
    bench_args = ["--repository", str(args.repository), "--photos", str(args.photos)]
    for arch, (fp32, int8) in pairs.items():
        bench_args += ["--variant", f"{arch}:{fp32}", "--variant", f"{arch}:{int8}"]
    bench_args += ["--engines", "onnxruntime", "--sections", "engine,http"]
    bench_args += ["--batch-sizes", args.batch_sizes, "--concurrency", args.concurrency]
    bench_args += ["--off-concurrency", "", "--output-dir", str(args.output_dir)]
    bench_args += ["--name", stem, *(["--quick"] if args.quick else [])]
    status = run_benchmark(bench_args)
    if status:
        return status
    json_path, md_path = args.output_dir / f"{stem}.json", args.output_dir / f"{stem}.md"
    results = json.loads(json_path.read_text(encoding="utf-8"))
    results["int8"] = rows = compare(results, pairs)
    print("== engine limit, fp32 / int8 interleaved", flush=True)
    results["int8_interleaved"] = ab_rows = interleaved(
        args.repository, pairs, [int(b) for b in args.batch_sizes.split(",")], args.ab_seconds
    )
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(json_path)
    section = markdown(rows) + "\n" + interleaved_markdown(ab_rows)
    md_path.write_text(md_path.read_text(encoding="utf-8") + section, encoding="utf-8")
    print(section)
    return 0


def _today() -> str:
    from datetime import date

    return date.today().isoformat()


if __name__ == "__main__":
    sys.exit(main())
