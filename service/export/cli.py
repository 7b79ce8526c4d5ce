"""``resnet-serve export``: build a model, export it, check parity, write a new version.

PyTorch, torchvision and ONNX are imported inside the handler, so registering the
subcommand costs nothing for ``resnet-serve serve`` on a serving-only install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.export import DEFAULT_OPSET, DEFAULT_PARITY_BOUND
from service.quantize.cli import add_export_flags, export_flags_error, quantize_after_export

if TYPE_CHECKING:
    from service.export.architectures import Architecture

FORMATS = ("onnx", "torchscript")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a ResNet to ONNX / TorchScript into the model repository",
        description=(
            "Build ARCH with pretrained, random or your own weights, export it, check the "
            "artifacts against PyTorch eager, and write models/<name>/<version>/. "
            "Nothing is written unless every check passes."
        ),
    )
    parser.add_argument("arch", nargs="?", metavar="ARCH", help="architecture (see --list)")
    parser.add_argument(
        "--list", action="store_true", help="list the architectures and their weight sets"
    )
    parser.add_argument(
        "--weights",
        metavar="NAME|DEFAULT|random",
        help="pretrained weight set (default: DEFAULT), or 'random' for an untrained model",
    )
    parser.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="your own state dict (torch.save)"
    )
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="one class name per line; the classifier gets one output per label",
    )
    parser.add_argument("--name", help="model name in the repository (default: ARCH)")
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        help="artifact format; repeat for both (default: onnx)",
    )
    parser.add_argument(
        "--repository", type=Path, default=Path("models"), help="model repository folder"
    )
    parser.add_argument(
        "--parity-images",
        type=Path,
        metavar="DIR",
        help="also check parity on the images under DIR (recursively)",
    )
    parser.add_argument(
        "--parity-bound",
        type=float,
        default=DEFAULT_PARITY_BOUND,
        metavar="FLOAT",
        help="largest allowed |logit| difference to PyTorch eager (default: %(default)g)",
    )
    parser.add_argument(
        "--allow-random-fallback",
        action="store_true",
        help="if the pretrained weights cannot be had, export random weights (with a warning)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)"
    )
    add_export_flags(parser)  # --quantize int8 --calibration DIR (service.quantize)
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    if args.list:
        print_zoo()
        return 0
    if args.arch is None:
        print("resnet-serve export: error: ARCH is required (see --list)", file=sys.stderr)
        return 2
    from service.export.pipeline import ExportFailed, ExportRequest, export

    if problem := export_flags_error(args):
        print(f"resnet-serve export: error: {problem}", file=sys.stderr)
        return 2

    request = ExportRequest(
        arch=args.arch,
        name=args.name or args.arch,
        weights=args.weights,
        checkpoint=args.checkpoint,
        labels_file=args.labels,
        formats=tuple(dict.fromkeys(args.formats or ["onnx"])),
        repository=args.repository,
        parity_images=args.parity_images,
        parity_bound=args.parity_bound,
        allow_random_fallback=args.allow_random_fallback,
        opset=args.opset,
    )
    try:
        result = export(request, report=print)
    except ExportFailed as exc:
        print(f"resnet-serve export: error: {exc}", file=sys.stderr)
        return 1
    print(result.summary())
    return quantize_after_export(args, args.repository, result.config.name, result.version)


def print_zoo() -> None:
    """The zoo as a Markdown table (pasteable into the README)."""
    from service.export.architectures import count_parameters, list_architectures

    print("| architecture | family | parameters | input | resize (DEFAULT) | weight sets |")
    print("|---|---|---|---|---|---|")
    for arch in list_architectures():
        params = count_parameters(arch) / 1e6
        size = arch.input_size
        print(
            f"| {arch.name} | {arch.family} | {params:.2f} M | 3x{size}x{size} "
            f"| {arch.preprocessing.resize_size} | {_weight_sets(arch)} |"
        )


def _weight_sets(arch: Architecture) -> str:
    names = [f"{name} (DEFAULT)" if name == arch.default_weights else name for name in arch.weights]
    return ", ".join([*names, "random"])
