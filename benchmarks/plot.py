"""Render a benchmark results JSON as a PNG: throughput and latency per concurrency.

``python -m benchmarks.plot benchmarks/results/<name>.json docs/benchmark.png`` (needs
matplotlib: ``pip install -e .[plot]``). The README shows the picture made from the
committed run, next to the engine limit it is measured against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    variants = sorted({row["variant"] for row in results["http"]})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    throughput, latency = axes
    for variant in variants:
        limit = max(
            (
                e["images_per_s"]
                for e in results["engine"]
                if e["variant"] == variant and e["engine"] == "onnxruntime"
            ),
            default=None,
        )
        for batching, style in (("on", "-o"), ("off", "--s")):
            rows = sorted(
                (
                    r
                    for r in results["http"]
                    if r["variant"] == variant and r["batching"] == batching
                ),
                key=lambda r: r["concurrency"],
            )
            if not rows:
                continue
            conc = [r["concurrency"] for r in rows]
            line = throughput.plot(
                conc,
                [r["images_per_s"] for r in rows],
                style,
                label=f"{variant} batching {batching}",
            )[0]
            if batching == "on":
                latency.plot(
                    conc,
                    [r["p50_ms"] for r in rows],
                    "-o",
                    color=line.get_color(),
                    label=f"{variant} p50",
                )
                latency.plot(
                    conc,
                    [r["p99_ms"] for r in rows],
                    ":^",
                    color=line.get_color(),
                    label=f"{variant} p99",
                )
                if limit:
                    throughput.axhline(limit, color=line.get_color(), alpha=0.4, linewidth=1)
                    throughput.annotate(
                        f"{variant} engine limit {limit:.0f}",
                        (conc[0], limit),
                        textcoords="offset points",
                        xytext=(2, 3),
                        fontsize=8,
                    )
    for ax, title, unit in (
        (throughput, "Throughput over HTTP", "images/s"),
        (latency, "Latency over HTTP", "ms (log)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    latency.set_yscale("log")
    machine = results.get("machine", {})
    fig.suptitle(
        f"resnet-serve on {machine.get('cpu', 'CPU')} ({machine.get('cores', '?')} cores), "
        f"{results.get('date', '')}: 640x480 JPEGs, one image per request",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    plot(json.loads(args.results.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
