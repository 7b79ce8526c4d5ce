"""Write a generated deployment file, or check that the committed copy is current.

Shared by the scripts that render one source of truth into another format (the alert
rules as a PrometheusRule, the dashboard as a ConfigMap): CI runs them with ``--check``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_or_check(target: Path, rendered: str, *, source: Path, script: str, check: bool) -> int:
    """0 when ``target`` was written, or (``check``) already equals ``rendered``; else 1."""
    name = target.relative_to(ROOT)
    if not check:
        target.write_text(rendered, encoding="utf-8")
        print(f"wrote {name}")
        return 0
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if current != rendered:
        print(f"{name} is stale: run python {script}", file=sys.stderr)
        return 1
    print(f"{name} matches {source.relative_to(ROOT)}")
    return 0
