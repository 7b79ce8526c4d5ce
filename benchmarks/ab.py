"""``python -m benchmarks.ab``: before vs after, and service vs bare engine, interleaved.

On a shared machine, load from other work comes and goes; two sequential runs see
different machines, so a 5 % change cannot be told from noise. Here everything compared
runs in alternating short slices within one run, so every arm sees the same load and
their *ratios* hold even when absolute figures are pessimistic:

* ``engine``: the bare engine in this process (the server's own ``create_engine`` and
  settings) on preprocessed tensors, at ``--batch-size``;
* ``base``: a server running the ``service`` of ``--base`` (a git revision, exported to a
  temp folder), and ``head``: a server running this checkout; both over HTTP with the
  benchmark's closed-loop client and 640x480 JPEGs, at each ``--concurrency``.

Only one arm runs at a time (the idle server costs nothing). Printed per arm: medians
over the rounds of img/s, p50 and p99, then head/base and service/engine ratios and the
load average, so a reader can judge how noisy the run was.

    python -m benchmarks.ab --model resnet18 --base HEAD~1 --concurrency 1,16,32 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import engine, http
from benchmarks.harness import REPO_ROOT, ServerProcess
from benchmarks.inputs import DEFAULT_CACHE, DEFAULT_PHOTOS, SMALL_SIZE, make_jpegs, source_photos
from benchmarks.options import _ints, _setting
from service.engines import create_engine
from service.preprocess import Limits, Preprocessor
from service.repository import load_model
from service.settings import Settings


def export_tree(revision: str, into: Path) -> Path:
    """The source tree of ``revision`` (its ``service/`` is what a base server runs)."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def engine_slice(run: object, batch: np.ndarray, seconds: float) -> float:
    budget = engine.EngineBudget(min_runs=1, min_time_s=seconds, max_runs=1000, max_time_s=seconds)
    times = engine.time_batches(run, batch, budget)
    return batch.shape[0] * len(times) / sum(times)


def summary(rows: list[http.LevelResult]) -> dict[str, float]:
    return {
        "img/s": statistics.median(r.images_per_s for r in rows),
        "p50 ms": statistics.median(r.p50_ms for r in rows),
        "p99 ms": statistics.median(r.p99_ms for r in rows),
        "batch": statistics.median(r.mean_batch_size for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repository", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--base", help="git revision for the 'base' server (default: none)")
    parser.add_argument("--concurrency", type=_ints, default=[16])
    parser.add_argument("--batch-size", type=int, default=16, help="engine arm batch size")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--slice-s", type=float, default=6.0, help="measured seconds per slice")
    parser.add_argument("--set", dest="settings", action="append", type=_setting, default=[])
    parser.add_argument(
        "--head-set", action="append", type=_setting, default=[], help="head server only"
    )
    args = parser.parse_args(argv)
    settings = {"log_level": "warning", **dict(args.settings)}
    entry = load_model(args.repository / args.model)
    version = entry.default_version
    engine_settings = Settings(**{k: v for k, v in settings.items() if k != "log_level"})
    with tempfile.TemporaryDirectory(prefix="resnet-ab-") as tmp_name:
        tmp = Path(tmp_name)
        jpegs = make_jpegs(source_photos(DEFAULT_PHOTOS), tmp / "jpegs", SMALL_SIZE, 16)
        bodies = http.multipart_bodies([(p.name, p.read_bytes()) for p in jpegs], 1)
        limits = Limits(max_pixels=engine_settings.max_image_pixels)
        prep = Preprocessor(entry.config.preprocessing, limits)
        tensors = [prep(p.read_bytes()) for p in jpegs]
        batch = np.stack([tensors[i % len(tensors)] for i in range(args.batch_size)])
        servers = {}
        if args.base:
            base_tree = export_tree(args.base, tmp / "base")
            servers["base"] = ServerProcess(
                args.repository, tmp / "base.log", source=base_tree, **settings
            )
        head_settings = {**settings, **dict(args.head_set)}
        servers["head"] = ServerProcess(args.repository, tmp / "head.log", **head_settings)
        bare = create_engine(entry.config, version, engine_settings)
        rows: dict[tuple[str, int], list[http.LevelResult]] = {}
        engine_rates: list[float] = []
        budget = http.LoadBudget(max_requests=100_000, max_time_s=args.slice_s, warmup_s=1.0)
        try:
            for server in servers.values():
                server.wait_ready()
            print(f"load average before: {os.getloadavg()}", flush=True)
            for round_ in range(args.rounds):
                engine_rates.append(engine_slice(bare.run, batch, args.slice_s))
                line = [f"round {round_ + 1}: engine b{args.batch_size} {engine_rates[-1]:.1f}"]
                for level in args.concurrency:
                    for arm, server in servers.items():
                        row = http.run_level(
                            server, args.model, version.info.version, bodies, 1, level, budget,
                            batching="on",
                        )  # fmt: skip
                        rows.setdefault((arm, level), []).append(row)
                        line.append(f"{arm} c{level} {row.images_per_s:.1f}")
                print("  ".join(line), "img/s", flush=True)
        finally:
            bare.close()
            for server in servers.values():
                server.stop()
    print(f"load average after: {os.getloadavg()}")
    limit = statistics.median(engine_rates)
    print(f"engine b{args.batch_size}: {limit:.1f} img/s (median of {len(engine_rates)} slices)")
    for (arm, level), got in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        s = summary(got)
        print(
            f"{arm:<5} c{level:<3} {s['img/s']:7.1f} img/s ({s['img/s'] / limit:5.1%} of engine) "
            f"p50 {s['p50 ms']:7.1f}  p99 {s['p99 ms']:7.1f} ms (p99/p50 "
            f"{s['p99 ms'] / s['p50 ms']:.2f})  batch {s['batch']:.1f}"
        )
        if arm == "head" and ("base", level) in rows:
            b = summary(rows[("base", level)])
            print(
                f"      head/base: img/s {s['img/s'] / b['img/s']:.3f}  p50 "
                f"{s['p50 ms'] / b['p50 ms']:.3f}  p99 {s['p99 ms'] / b['p99 ms']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
