"""The command-line options of ``python -m benchmarks.run`` (``make bench``).

Options and their defaults only, imported by the runner and by ``benchmarks.int8``
(which reuses ``RESULTS_DIR``); nothing here imports back, so the package has no
import cycle. The product's CLI does not know the benchmarks: they live in the source
tree, not in the wheel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.inputs import DEFAULT_CACHE, DEFAULT_PHOTOS, Variant

TRITON_PYTHON = Path(__file__).resolve().parents[1] / ".cache" / "triton-venv" / "bin" / "python"

DEFAULT_VARIANTS = ("resnet50", "resnet18")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lower().replace("-", "_"), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--variant",
        action="append",
        type=Variant.parse,
        metavar="NAME[:VERSION]",
        help=f"model version to measure, repeatable (default: {', '.join(DEFAULT_VARIANTS)})",
    )
    add(
        "--repository",
        type=Path,
        default=DEFAULT_CACHE,
        help="model repository; missing default models are exported there with random "
        "weights (default: %(default)s)",
    )
    add(
        "--images",
        type=Path,
        help="folder of images to send (default: 640x480 JPEGs generated from the shared photos)",
    )
    add("--photos", type=Path, default=DEFAULT_PHOTOS, help="photos to cut JPEGs from")
    add("--engines", default="onnxruntime,torchscript", help="engines for the engine limit")
    add("--batch-sizes", type=_ints, help="engine batch sizes (default 1,2,4,8,16,32)")
    add("--concurrency", type=_ints, help="HTTP concurrency levels (default 1,4,16,64)")
    add(
        "--off-concurrency",
        type=_ints,
        help="levels also run with batching off, max_batch_size=1 (default 16,64)",
    )
    add(
        "--doors-concurrency",
        type=_ints,
        help="levels of the front doors, ours and Triton's (default 1,4,16,64,128)",
    )
    add(
        "--doors-rounds",
        type=int,
        default=1,
        help="rounds per level of the doors and Triton, the servers alternating; each "
        "(door, level) keeps its median round by img/s (default 1)",
    )
    add("--phone-concurrency", type=int, help="level of the 12 MP photo workload (default 16)")
    add(
        "--triton-python",
        type=Path,
        default=TRITON_PYTHON,
        help="interpreter with PyTriton (`python -m benchmarks.triton --setup` builds the "
        "default, %(default)s); Triton is skipped, with a note, when it is missing",
    )
    add("--images-per-request", type=int, default=1)
    add(
        "--set",
        dest="server_settings",
        action="append",
        type=_setting,
        default=[],
        metavar="KEY=VALUE",
        help="server setting for both servers, e.g. max_queue_delay_ms=0",
    )
    add(
        "--sections",
        default="engine,preprocess,http,doors,triton,phone",
        help="what to run (doors: our front doors; triton: Triton beside them; phone: "
        "12 MP photos end to end against the decode limit)",
    )
    add("--device", choices=("cpu", "cuda"), help="engine device (cuda: untested here)")
    add(
        "--providers",
        help="ONNX Runtime providers, e.g. TensorrtExecutionProvider,"
        "CUDAExecutionProvider (engine and server)",
    )
    add("--fp16", action="store_true", help="fp16 on GPU engines (untested here)")
    add("--server-cpus", help="pin the server with taskset, e.g. 0-1 (default: no pinning)")
    add(
        "--quick", action="store_true", help="tiny counts for CI: checks the harness, not the speed"
    )
    add("--output-dir", type=Path, default=RESULTS_DIR)
    add("--name", help="results file stem (default: <machine>-<date>[-quick])")
