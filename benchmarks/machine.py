"""What the numbers were measured on: CPU, cores, load, library versions."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any


def cores() -> int:
    """Cores this process may use (a container's limit, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load: other work on a shared machine skews every figure."""
    return [round(x, 2) for x in os.getloadavg()]


def slug() -> str:
    """A file-name-safe machine name, e.g. ``2cpu-intel-xeon-platinum-8488c``."""
    model = cpu_model().lower()
    model = re.sub(r"\(r\)|\(tm\)|cpu|@.*$|processor", " ", model)
    words = re.findall(r"[a-z0-9]+", model)[:5]
    return "-".join([f"{cores()}cpu", *words])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        first = meminfo.read_text().splitlines()[0].split()
        memory_gib = round(int(first[1]) / 2**20, 1)
    return {
        "slug": slug(),
        "cpu": cpu_model(),
        "cores": cores(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {
            p: _version(p)
            for p in ("onnxruntime", "onnxruntime-gpu", "torch", "pillow", "numpy", "uvicorn")
            if _version(p)
        },
    }
