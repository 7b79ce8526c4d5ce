"""The GPU check's results as the Markdown table it prints and writes (benchmarks/gpu.py)."""

from __future__ import annotations

from typing import Any


def _engine_label(row: dict[str, Any]) -> str:
    """An engine row's name as the service rows spell it: ``torchscript cuda:0 fp16``."""
    fp16 = " fp16" if row["precision"] == "fp16" else ""
    return f"{row['engine']} {row['provider']}{fp16}"


def markdown(results: dict[str, Any]) -> str:
    """The results table the check prints and writes."""
    lines = [f"# GPU check: {results['model']} on {results['device_name']}", ""]
    lines += [f"- {key}: {value}" for key, value in results["environment"].items()]
    lines += ["", "## Engine limit (bare engine, preprocessed tensors)", ""]
    lines += [
        "| engine | provider | precision | batch | img/s | batch p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["engine"]:
        lines.append(
            f"| {row['engine']} | {row['provider']} | {row['precision']} | {row['batch_size']} "
            f"| {row['images_per_s']:.1f} | {row['batch_ms_p50']:.2f} |"
        )
    lines.append("")
    lines += ["## Preprocessing (640x480 JPEGs)", "", "| backend | device | images | img/s |"]
    lines.append("|---|---|---|---|")
    for row in results["preprocess"]:
        lines.append(
            f"| {row['backend']} | {row['device']} | {row['images']} | {row['images_per_s']:.1f} |"
        )
    lines += ["", "## The service in-process (JPEG bytes in, logits out; no HTTP)", ""]
    lines += [
        "| engine | preprocessing | concurrency | img/s | x its engine limit | p50 ms | p99 ms |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for row in results["service"]:
        # Against the best batch of the same engine and precision, not the fastest overall.
        same = [e for e in results["engine"] if row["engine"] == _engine_label(e)]
        best = max((e["images_per_s"] for e in same), default=0.0)
        ratio = row["images_per_s"] / best if best else 0.0
        lines.append(
            f"| {row['engine']} | {row['preprocess']} | {row['concurrency']} "
            f"| {row['images_per_s']:.1f} | {ratio:.2f} | {row['latency_ms_p50']:.1f} "
            f"| {row['latency_ms_p99']:.1f} |"
        )
    lines += ["", "## Not run", ""]
    lines += [f"- {reason}" for reason in results["skipped"]] or ["- nothing"]
    return "\n".join(lines) + "\n"
