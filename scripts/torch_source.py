"""Where `make` takes PyTorch from for the export environment: prints pip arguments.

PyTorch is only needed to export (and for the TorchScript engine). The ordinary index's
Linux wheels are the CUDA build, about 3 GB with NVIDIA's libraries; on a machine without
an NVIDIA driver that is 3 GB for nothing, so there PyTorch's CPU index is used (about
200 MB of wheels) when it answers. It may not (a mirror-only or firewalled network): then
the ordinary index, whatever pip is configured with, so an export still works.

Prints ``--index-url <cpu index>`` or nothing (the ordinary index), and says on stderr
which and why. Standard library only: it runs before any virtualenv exists.

    python3 scripts/torch_source.py [--index URL] [--timeout-s S] [--driver-file PATH]
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Present whenever the NVIDIA kernel driver is loaded (what CUDA wheels need to run).
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def index_answers(index: str, timeout_s: float) -> str | None:
    """None when ``index`` serves a torch project page, else why not (one line)."""
    url = index.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status == 200:
                return None
            return f"{url} answered HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} did not answer ({reason})"


def choose(index: str, timeout_s: float, driver_file: Path) -> tuple[list[str], str]:
    """The pip arguments and the reason for them."""
    if driver_file.exists():
        return [], "NVIDIA driver found: PyTorch from the ordinary index (CUDA build)"
    problem = index_answers(index, timeout_s)
    if problem is None:
        return ["--index-url", index], f"no NVIDIA driver: PyTorch's CPU wheels from {index}"
    return [], f"no NVIDIA driver, but {problem}: PyTorch from the ordinary index instead"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=CPU_INDEX, help="PyTorch's CPU wheel index")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="probe timeout")
    parser.add_argument(
        "--driver-file", type=Path, default=NVIDIA_DRIVER_FILE, help="NVIDIA driver marker"
    )
    args = parser.parse_args(argv)
    pip_args, reason = choose(args.index, args.timeout_s, args.driver_file)
    print(f"torch_source: {reason}", file=sys.stderr)
    print(" ".join(pip_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
