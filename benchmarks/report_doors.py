"""The front doors, Triton beside them and the phone photos: ratios, tables, headline.

Apart from :mod:`benchmarks.report` to keep each module small. The rows are those of
:func:`benchmarks.doors.rows_with_ratios` (``results["doors"]``, ``results["triton"]``,
``results["phone"]["rows"]``); every ratio is worked out here, from rows of one run:
to the engine limit (bare ONNX Runtime at its best batch), to Triton at the same door
and level, to the machine's decode limit for 12 MP photos.
"""

from __future__ import annotations

from typing import Any

from benchmarks.tables import SPLIT_HEADER, num, table, thread_split


def _key(row: dict[str, Any]) -> str:
    return f"{row['door']} {row['input']}"


def engine_limit(results: dict[str, Any], variant: str) -> dict[str, Any] | None:
    """The best engine row of the engine the server ran (ONNX Runtime unless told)."""
    served = results.get("served", {}).get(variant, {}).get("engine", "onnxruntime")
    rows = [
        r for r in results.get("engine", []) if r["variant"] == variant and r["engine"] == served
    ]
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model: the targets of issue 21 as measured (None where not measured)."""
    out = []
    ours_all, theirs_all = results.get("doors", []), results.get("triton", [])
    for variant in dict.fromkeys(r["variant"] for r in ours_all):
        ours = [r for r in ours_all if r["variant"] == variant]
        theirs = [r for r in theirs_all if r["variant"] == variant]
        limit = engine_limit(results, variant)
        limit_ips = limit["images_per_s"] if limit else None
        best, best_triton = _best(ours), _best(theirs)
        assert best is not None
        door_rows = [r for r in ours if _key(r) == _key(best)]
        by_level = {r["concurrency"]: r["images_per_s"] for r in door_rows}
        per_door = {
            _key(r): max(x["images_per_s"] for x in ours if _key(x) == _key(r)) for r in ours
        }
        c1 = [r for r in door_rows if r["concurrency"] == 1]
        b1 = [
            r
            for r in results.get("engine", [])
            if limit and r["variant"] == variant and r["engine"] == limit["engine"]
            if r["batch_size"] == 1
        ]
        clients = [*ours, *theirs]
        out.append(
            {
                "variant": variant,
                "engine_limit_images_per_s": limit_ips,
                "engine_limit_batch": limit["batch_size"] if limit else None,
                "best_door": _key(best),
                "best_concurrency": best["concurrency"],
                "best_images_per_s": best["images_per_s"],
                "best_over_engine": _ratio(best["images_per_s"], limit_ips),
                "per_door_best_images_per_s": per_door,
                "worst_door_over_best": min(per_door.values()) / best["images_per_s"],
                "c64_over_best": _ratio(by_level.get(64), best["images_per_s"]),
                "c128_over_best": _ratio(by_level.get(128), best["images_per_s"]),
                "c1_p50_ms": c1[0]["p50_ms"] if c1 else None,
                "engine_b1_ms": b1[0]["batch_ms_p50"] if b1 else None,
                "c1_over_engine_b1_ms": c1[0]["p50_ms"] - b1[0]["batch_ms_p50"]
                if c1 and b1
                else None,
                "triton_best_door": _key(best_triton) if best_triton else None,
                "triton_best_images_per_s": best_triton["images_per_s"] if best_triton else None,
                "triton_best_over_engine": _ratio(
                    best_triton["images_per_s"] if best_triton else None, limit_ips
                ),
                "ours_over_triton": _ratio(
                    best["images_per_s"], best_triton["images_per_s"] if best_triton else None
                ),
                "client_cpu_share_max": max(r["client_cpu_share"] for r in clients),
                "client_cpu_ms_per_request_max": max(
                    r["client_cpu_ms_per_request"] for r in clients
                ),
            }
        )
    return out


def headline(results: dict[str, Any]) -> list[str]:
    """The targets table: one row per model, every figure from this run."""
    rows = results.get("side_by_side") or []
    if not rows:
        return []
    lines = ["", "Front doors and Triton (same load generator, same run):", ""]
    lines += table(
        [
            "model",
            "engine limit img/s",
            "best door img/s",
            "/ limit",
            "Triton best img/s",
            "Triton / limit",
            "ours / Triton",
            "worst door / best",
            "c64, c128 / best",
            "c1 p50 − engine b1 ms",
            "client CPU (max)",
        ],
        [
            [
                r["variant"],
                f"{num(r['engine_limit_images_per_s'])} @ b{r['engine_limit_batch']}",
                f"{num(r['best_images_per_s'])} ({r['best_door']} c{r['best_concurrency']})",
                f"**{num(r['best_over_engine'], 2)}**",
                f"{num(r['triton_best_images_per_s'])} ({r['triton_best_door'] or '–'})",
                num(r["triton_best_over_engine"], 2),
                f"**{num(r['ours_over_triton'], 2)}x**",
                num(r["worst_door_over_best"], 2),
                f"{num(r['c64_over_best'], 2)}, {num(r['c128_over_best'], 2)}",
                num(r["c1_over_engine_b1_ms"]),
                f"{r['client_cpu_share_max']:.1%}, "
                f"{num(r['client_cpu_ms_per_request_max'], 2)} ms/req",
            ]
            for r in rows
        ],
    )
    return lines


def _triton_at(results: dict[str, Any], row: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    same = [
        r
        for r in rows
        if r["server"] == "triton"
        and r["variant"] == row["variant"]
        and r["concurrency"] == row["concurrency"]
    ]
    match = [r for r in same if _key(r) == _key(row)]
    if row["server"] == "triton" or not same:
        return None
    # A door Triton lacks (/classify) is set against Triton's best door at that level.
    return match[0] if match else max(same, key=lambda r: r["images_per_s"])


def _rows_table(results: dict[str, Any], rows: list[dict[str, Any]], base: str) -> list[str]:
    """``base``: ``engine`` (img/s over the engine limit) or ``decode`` (the decode limit)."""
    decode = (results.get("phone") or {}).get("decode_limit") or {}
    body = []
    for r in rows:
        if base == "engine":
            limit = engine_limit(results, r["variant"])
            over = _ratio(r["images_per_s"], limit["images_per_s"] if limit else None)
        else:
            over = _ratio(r["images_per_s"], decode.get("images_per_s"))
        triton = _triton_at(results, r, rows)
        body.append(
            [
                r["server"],
                r["variant"],
                r["door"],
                r["input"],
                str(r["concurrency"]),
                str(r["requests"]),
                str(r["errors"]),
                num(r["images_per_s"]),
                num(over, 2),
                num(_ratio(r["images_per_s"], triton["images_per_s"] if triton else None), 2),
                num(r["p50_ms"]),
                num(r["p99_ms"]),
                num(r["mean_batch_size"], 2),
                num(r["server_cpu_ms_per_image"]),
                thread_split(r.get("server_cpu_ms_by_thread")),
                f"{num(r['client_cpu_ms_per_request'], 2)} ({r['client_cpu_share']:.1%})",
            ]
        )
    headers = ["server", "model", "door", "input", "conc.", "requests", "errors", "img/s"]
    headers += [f"x {base} limit", "x Triton (same door or its best, same c)", "p50 ms"]
    headers += ["p99 ms", "mean batch"]
    headers += ["server CPU ms/img", SPLIT_HEADER, "client CPU ms/req (share)"]
    return table(headers, body)


def section(results: dict[str, Any]) -> list[str]:
    """The doors table (ours, then Triton's) and the phone-photo table."""
    rows = [*(results.get("doors") or []), *(results.get("triton") or [])]
    lines: list[str] = []
    if rows:
        lines += ["## Front doors, ours and Triton's (same images, load generator and run)", ""]
        lines += _rows_table(results, rows, "engine")
        version = results.get("triton_version")
        lines += [
            "Img/s is goodput (200/OK answers completed in the window). Requests are built "
            "once before the load; each carries one 640x480 JPEG (FP32: its pixels, "
            "preprocessed by the model's recipe) and asks for the top class only. "
            "Client CPU: the load generator's own CPU time (all threads) per request, and "
            "as a share of the machine. "
            + (
                f"Triton 2.51 through PyTriton {version}: a Python function doing our "
                "preprocessing and our ONNX Runtime engine, dynamic batching, max batch 32."
                if version
                else "Triton: not measured in this run."
            ),
            "",
        ]
    phone = results.get("phone") or {}
    decode = phone.get("decode_limit")
    if decode:
        lines += [
            f"## Phone photos ({decode['width']}x{decode['height']} JPEGs, "
            f"{decode['mean_bytes'] / 1e6:.1f} MB mean, {phone.get('variant')}), end to end",
            "",
            f"Decode limit (the service's preprocessing in-process on {decode['threads']} "
            f"threads, no HTTP): **{num(decode['images_per_s'])} img/s**, "
            f"{num(decode['cpu_ms_per_image'])} CPU-ms per image.",
            "",
        ]
        lines += _rows_table(results, phone.get("rows") or [], "decode")
    return lines
