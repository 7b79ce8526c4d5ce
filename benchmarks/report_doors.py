"""The "Front doors" part of the report: its table and its headline line.

Apart from :mod:`benchmarks.report` to keep each module small; the rows are those of
:func:`benchmarks.doors.rows_with_ratios` (``results["doors"]``).
"""

from __future__ import annotations

from typing import Any

from benchmarks.tables import num, pct, table


def _key(row: dict[str, Any]) -> str:
    return f"{row['door']} {row['input']}"


def headline(results: dict[str, Any]) -> list[str]:
    """One line: ``/classify``'s img/s and every other door's img/s as a multiple of it."""
    rows = results.get("doors") or []
    base = next((r for r in rows if r["door"] == "classify"), None)
    if base is None:
        return []
    others = ", ".join(f"{_key(r)} **{num(r['over_classify'], 2)}x**" for r in rows if r != base)
    return [
        f"Front doors ({base['variant']}, concurrency {base['concurrency']}, one image per "
        f"request, same run): /classify {num(base['images_per_s'])} img/s; {others}.",
        "",
    ]


def section(results: dict[str, Any]) -> list[str]:
    """The table, one row per door, in the order they ran."""
    rows = results.get("doors") or []
    if not rows:
        return []
    lines = ["## Front doors (one server, same images and load, one after the other)", ""]
    lines += table(
        [
            "door",
            "input",
            "conc.",
            "requests",
            "errors",
            "img/s",
            "x /classify",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "mean batch",
            "client CPU",
            "server CPU",
            "CPU ms/img",
        ],
        [
            [
                r["door"],
                r["input"],
                str(r["concurrency"]),
                str(r["requests"]),
                str(r["errors"]),
                num(r["images_per_s"]),
                num(r["over_classify"], 2),
                num(r["p50_ms"]),
                num(r["p90_ms"]),
                num(r["p99_ms"]),
                num(r["mean_batch_size"], 2),
                pct(r["client_cpu_share"]),
                pct(r["server_cpu_share"]),
                num(r["cpu_ms_per_image"]),
            ]
            for r in rows
        ],
    )
    lines += [
        "Each door's requests are built once before the load (multipart bodies; "
        "tritonclient's binary-extension bodies; gRPC messages with raw_input_contents; "
        "FP32 pixels preprocessed with the model's own recipe), and each asks for the top "
        "class only. FP32 requests skip the server's decode but carry 4·3·H·W bytes of "
        "pixels instead of the JPEG.",
        "",
    ]
    return lines
