"""Results: the three ratios, the Markdown tables, and the JSON + Markdown files.

The JSON is the record (every row, every setting, machine and load); the Markdown is
the same figures for people, headline first. The front doors' table and headline line
are in :mod:`benchmarks.report_doors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import report_doors
from benchmarks.tables import SPLIT_HEADER, num, pct, table, thread_split


def _best(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return max(rows, key=lambda r: r[key]) if rows else None


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: service vs engine limit, low-load overhead, batching on vs off.

    The engine limit is taken for the engine the server actually ran for that variant
    (as reported by its /models), so the comparison is like for like.
    """
    out = []
    for variant, served in results.get("served", {}).items():
        engine_rows = [
            r
            for r in results["engine"]
            if r["variant"] == variant and r["engine"] == served["engine"]
        ]
        on = [r for r in results["http"] if r["variant"] == variant and r["batching"] == "on"]
        off = [r for r in results["http"] if r["variant"] == variant and r["batching"] == "off"]
        best_engine = _best(engine_rows, "images_per_s")
        best_service = _best(on, "images_per_s")
        row: dict[str, Any] = {"variant": variant, "engine": served["engine"]}
        if best_engine and best_service:
            row.update(
                engine_best_images_per_s=best_engine["images_per_s"],
                engine_best_batch=best_engine["batch_size"],
                service_best_images_per_s=best_service["images_per_s"],
                service_best_concurrency=best_service["concurrency"],
                service_over_engine=best_service["images_per_s"] / best_engine["images_per_s"],
            )
        # The same comparison in CPU time per image, which other work on a shared machine
        # barely moves: what the service would reach with the machine to itself.
        engine_cpu = [r["cpu_ms_per_image"] for r in engine_rows if r.get("cpu_ms_per_image")]
        service_cpu = [r["cpu_ms_per_image"] for r in on if r.get("cpu_ms_per_image")]
        if engine_cpu and service_cpu:
            row.update(
                engine_cpu_ms_per_image=min(engine_cpu),
                service_cpu_ms_per_image=min(service_cpu),
                cpu_efficiency=min(engine_cpu) / min(service_cpu),
            )
        batch1 = [r for r in engine_rows if r["batch_size"] == 1]
        c1 = [r for r in on if r["concurrency"] == 1 and r["images_per_request"] == 1]
        if batch1 and c1:
            row.update(
                engine_batch1_ms=batch1[0]["batch_ms_p50"],
                service_c1_p50_ms=c1[0]["p50_ms"],
                low_load_overhead_ms=c1[0]["p50_ms"] - batch1[0]["batch_ms_p50"],
            )
        if c1 and c1[0].get("server_inference_ms"):
            # Against the engine time of the same requests, measured in the same moment.
            row.update(
                c1_engine_in_server_ms=c1[0]["server_inference_ms"],
                c1_overhead_same_request_ms=c1[0]["p50_ms"] - c1[0]["server_inference_ms"],
                c1_decode_ms=c1[0]["server_decode_ms"],
            )
        # Best against best among the levels >= 16 measured both ways: no pair is picked
        # for its ratio.
        both = {r["concurrency"] for r in off} & {r["concurrency"] for r in on}
        high = [r for r in on + off if r["concurrency"] in both and r["concurrency"] >= 16]
        best_on = _best([r for r in high if r["batching"] == "on"], "images_per_s")
        best_off = _best([r for r in high if r["batching"] == "off"], "images_per_s")
        if best_on and best_off:
            row.update(
                batching_concurrency=best_on["concurrency"],
                batching_off_concurrency=best_off["concurrency"],
                batching_on_images_per_s=best_on["images_per_s"],
                batching_off_images_per_s=best_off["images_per_s"],
                batching_gain=best_on["images_per_s"] / best_off["images_per_s"],
            )
        out.append(row)
    return out


def _engine_b1(results: dict[str, Any], variant: str) -> float | None:
    engine = results.get("served", {}).get(variant, {}).get("engine")
    for r in results["engine"]:
        if r["variant"] == variant and r["engine"] == engine and r["batch_size"] == 1:
            return float(r["batch_ms_p50"])
    return None


def headline(results: dict[str, Any]) -> list[str]:
    rows = []
    for r in results["ratios"]:
        rows.append(
            [
                f"{r['variant']} ({r['engine']})",
                f"{num(r.get('engine_best_images_per_s'))} @ b{r.get('engine_best_batch')}",
                f"{num(r.get('service_best_images_per_s'))} @ c{r.get('service_best_concurrency')}",
                f"**{pct(r.get('service_over_engine'))}**",
                pct(r.get("cpu_efficiency")),
                num(r.get("engine_batch1_ms")),
                num(r.get("service_c1_p50_ms")),
                f"**{num(r.get('low_load_overhead_ms'))}**",
                f"{num(r.get('c1_overhead_same_request_ms'))} ({num(r.get('c1_decode_ms'))})",
                (
                    f"**{num(r.get('batching_gain'), 2)}x** (c{r.get('batching_concurrency')} vs "
                    f"c{r.get('batching_off_concurrency')})"
                    if r.get("batching_gain") is not None
                    else "not measured"
                ),
            ]
        )
    if not rows:  # the /classify section did not run: only the doors' table
        return report_doors.headline(results)
    lines = table(
        [
            "model",
            "engine limit img/s",
            "service img/s",
            "service / limit",
            "same, by CPU time",
            "engine b1 ms",
            "service c1 p50 ms",
            "c1 overhead ms",
            "c1 overhead vs own engine time (decode) ms",
            "batching on / off",
        ],
        rows,
    )
    return [*lines, *report_doors.headline(results)]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Benchmark: {m['slug']} — {results['date']}",
        "",
        f"`{results['command']}` ({results['mode']} mode, {results['duration_s']:.0f} s).",
        f"CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}; "
        f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        f"Load average (1/5/15 min) before: {results['load_before']}, after: "
        f"{results['load_after']}.",
        "Weights: "
        + ", ".join(f"{k} {v}" for k, v in results["weights"].items())
        + " — speed does not depend on weight values.",
        "",
        "## Headline",
        "",
        *headline(results),
    ]
    lines += [f"- {note}" for note in results["notes"]] + [""]
    lines += ["## Engine limit (in-process, preprocessed tensors)", ""]
    lines += table(
        [
            "model",
            "engine",
            "provider",
            "precision",
            "batch",
            "img/s",
            "batch p50 ms",
            "runs",
            "CPU ms/img",
        ],
        [
            [
                r["variant"],
                r["engine"],
                r["provider"],
                r["precision"],
                str(r["batch_size"]),
                num(r["images_per_s"]),
                num(r["batch_ms_p50"]),
                str(r["runs"]),
                num(r.get("cpu_ms_per_image")),
            ]
            for r in results["engine"]
        ],
    )
    for skipped in results["engine_skipped"]:
        lines.append(f"- {skipped['variant']} {skipped['engine']}: not run ({skipped['reason']})")
    lines += ["", "## Preprocessing per image (decode + resize/crop + normalise)", ""]
    lines += table(
        [
            "images",
            "size",
            "mean KB",
            "decode ms",
            "resize+crop ms",
            "normalise ms",
            "total p50 ms",
            "img/s, decode pool",
        ],
        [
            [
                r["image_set"],
                f"{r['width']}x{r['height']}",
                num(r["mean_bytes"] / 1024, 0),
                num(r["decode_ms"], 2),
                num(r["resize_crop_ms"], 2),
                num(r["normalise_ms"], 2),
                num(r["total_ms_p50"], 2),
                num(r["images_per_s_threaded"]),
            ]
            for r in results["preprocess"]
        ],
    )
    lines += ["## Service over HTTP (real JPEGs, closed loop)", ""]
    lines += table(
        [
            "model",
            "batching",
            "conc.",
            "img/req",
            "requests",
            "errors",
            "req/s",
            "img/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "mean batch",
            "client CPU ms/req (share)",
            "server CPU",
            "CPU ms/img",
            SPLIT_HEADER,
        ],
        [
            [
                r["variant"],
                r["batching"],
                str(r["concurrency"]),
                str(r["images_per_request"]),
                str(r["requests"]),
                str(r["errors"]),
                num(r["requests_per_s"]),
                num(r["images_per_s"]),
                num(r["p50_ms"]),
                num(r["p90_ms"]),
                num(r["p99_ms"]),
                num(r["mean_batch_size"], 2),
                f"{num(r.get('client_cpu_ms_per_request'), 2)} ({r['client_cpu_share']:.1%})",
                f"{r['server_cpu_share']:.0%}",
                num(r.get("cpu_ms_per_image")),
                thread_split(r.get("server_cpu_ms_by_thread")),
            ]
            for r in results["http"]
        ],
    )
    lines += ["## Where the time goes at concurrency 1 (medians, ms)", ""]
    lines += table(
        [
            "model",
            "client p50",
            "server route",
            "decode",
            "queue",
            "engine",
            "HTTP + client + loop",
            "engine b1 (in-process)",
        ],
        [
            [
                r["variant"],
                num(r["p50_ms"]),
                num(r["server_total_ms"]),
                num(r["server_decode_ms"]),
                num(r["server_queue_ms"]),
                num(r["server_inference_ms"]),
                num(r["p50_ms"] - r["server_total_ms"]),
                num(_engine_b1(results, r["variant"])),
            ]
            for r in results["http"]
            if r["concurrency"] == 1 and r["batching"] == "on"
        ],
    )
    lines += report_doors.section(results)
    lines += ["## Settings", "", "```json", json.dumps(results["config"], indent=2), "```", ""]
    return "\n".join(lines)


def write(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(json_path)
    md_path.write_text(markdown(results), encoding="utf-8")
    return json_path, md_path
