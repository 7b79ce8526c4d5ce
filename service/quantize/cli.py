"""``resnet-serve quantize`` and the ``--quantize int8`` flags of ``resnet-serve export``.

Imports stay light (argparse only) because ``service.cli`` imports this module on every
start; onnx and onnxruntime.quantization load when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METHOD_CHOICES = ("minmax", "entropy", "percentile")
#: Exit status when the int8 model is refused by the agreement gate (2 is argparse's).
EXIT_REFUSED = 3
EXIT_USAGE = 2


def _fraction(text: str) -> float:
    """Agreement threshold as a fraction; 98 (a percentage) is refused, not guessed at."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a fraction between 0 and 1, such as 0.98 for 98 %"
        )
    return value


def _add_quant_options(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    parser.add_argument(
        "--holdout",
        type=Path,
        help="folder of images NOT used for calibration, evaluated too (labels.csv or "
        "class-named sub-folders give accuracies); the gate applies to it as well",
    )
    parser.add_argument(
        "--min-agreement",
        type=_fraction,
        default=0.98,
        help="refuse the int8 model if its top-1 agrees with fp32 on fewer than this "
        "fraction of images (default 0.98)",
    )
    parser.add_argument(
        f"--{prefix}method",
        dest="quant_method",
        choices=METHOD_CHOICES,
        default="percentile",
        help="activation range calibration (default percentile: best agreement measured)",
    )
    parser.add_argument(
        "--activation-type",
        choices=("QUInt8", "QInt8"),
        default="QUInt8",
        help="QUInt8 (default) is the fast VNNI path on x86; QInt8 is ~3x slower there",
    )
    parser.add_argument(
        "--reduce-range",
        action="store_true",
        help="7-bit weights: only for x86 CPUs WITHOUT AVX-512 VNNI / AVX-VNNI",
    )
    parser.add_argument(
        "--keep-default",
        action="store_true",
        help="pin the current default version in config.json, so requests naming no "
        "version stay on it (the int8 version is then reached with ?version=N)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="add an int8 version of an exported model (static, calibrated)",
        description="Quantize an fp32 ONNX version to int8 (QDQ, per-channel weights), "
        "calibrated on a folder of images, and write it as a new version beside it. "
        "Refused (exit 3) if top-1 agreement with fp32 is below --min-agreement.",
    )
    parser.add_argument("model", help="model name (folder under the repository)")
    parser.add_argument(
        "--calibration",
        type=Path,
        required=True,
        help="folder of a few hundred representative images (labels.csv optional)",
    )
    parser.add_argument("--version", type=int, help="fp32 version to quantize (default newest)")
    parser.add_argument("--repository", type=Path, help="model repository (default: settings)")
    _add_quant_options(parser)
    parser.set_defaults(func=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    repository = args.repository
    if repository is None:
        from service.settings import load_settings

        repository = load_settings().repository
    return run(args, repository, args.model, args.version)


def run(args: argparse.Namespace, repository: Path, model: str, version: int | None) -> int:
    """Quantize and print the report; the exit status says what happened."""
    from service.errors import ModelConfigError
    from service.quantize.calibration import CalibrationError
    from service.quantize.pipeline import QuantizeError, quantize_model
    from service.quantize.report import QuantizationRefused
    from service.quantize.static import QuantOptions

    try:
        result = quantize_model(
            repository,
            model,
            args.calibration,
            version=version,
            holdout_dir=args.holdout,
            min_agreement=args.min_agreement,
            options=QuantOptions(
                method=args.quant_method,
                activation_type=args.activation_type,
                reduce_range=args.reduce_range,
            ),
            keep_default=args.keep_default,
        )
    except QuantizationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (QuantizeError, CalibrationError, ModelConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for report in result.reports:
        print(report.describe())
    print(
        f"wrote {result.path} (int8, from v{result.source_version}); "
        f"default version of {result.model} is now v{result.default_version}"
    )
    return 0


# -- hooks for `resnet-serve export` -----------------------------------------------------
def add_export_flags(parser: argparse.ArgumentParser) -> None:
    """``--quantize int8 --calibration DIR`` (+ gate options) on the export command."""
    group = parser.add_argument_group("int8 quantization (after the fp32 export)")
    group.add_argument(
        "--quantize",
        choices=("int8",),
        help="also write an int8 version, calibrated on --calibration (see `quantize -h`)",
    )
    group.add_argument("--calibration", type=Path, help="calibration image folder")
    _add_quant_options(group, prefix="quantize-")  # type: ignore[arg-type]


def export_flags_error(args: argparse.Namespace) -> str | None:
    """Why the quantization flags cannot work, checked before the (slow) export runs."""
    if not getattr(args, "quantize", None):
        return None
    if args.calibration is None:
        return "--quantize int8 needs --calibration DIR (a folder of sample images)"
    if not args.calibration.is_dir():
        return f"--calibration {args.calibration}: not a folder"
    formats = getattr(args, "formats", None)
    if formats and "onnx" not in formats:
        return "--quantize int8 quantizes the ONNX artifact: add --format onnx"
    return None


def quantize_after_export(
    args: argparse.Namespace, repository: Path, model: str, version: int
) -> int:
    """Run after the fp32 version is written; 0 when nothing was asked for."""
    if not getattr(args, "quantize", None):
        return 0
    return run(args, repository, model, version)
