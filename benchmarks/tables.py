"""Markdown table and number formatting shared by the report modules.

One place so every table of a report prints a missing figure the same way ("–").
"""

from __future__ import annotations

from typing import Any


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, then a blank line."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def num(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


#: The server CPU split a table cell shows (:mod:`benchmarks.threads` groups); every other
#: group (parse, gRPC's C-core, unnamed helpers) is summed as the last figure.
SPLIT_GROUPS = ("event loop", "decode", "engine")
SPLIT_HEADER = "server CPU-ms/img: loop / decode / engine / rest"


def thread_split(by_thread: dict[str, float] | None) -> str:
    """A row's ``server_cpu_ms_by_thread`` as ``1.0 / 4.1 / 43.5 / 0.3``; "–" where the
    server's threads were not measured (Triton, results from before the split)."""
    if not by_thread:
        return "–"
    shown = [by_thread.get(group, 0.0) for group in SPLIT_GROUPS]
    rest = sum(v for group, v in by_thread.items() if group not in SPLIT_GROUPS)
    return " / ".join(num(value) for value in [*shown, rest])
