"""``resnet-serve import``: add a plain ONNX classifier to the repository, without PyTorch.

For a user who already has ``model.onnx`` (exported elsewhere, fine-tuned, bought): the
file is checked the way the server will use it, then written as a new version with its
checksum and origin, like an export. Checks, each failing with one line that says what
was found and what is needed:

* ONNX Runtime loads it (the serving engine class, on the CPU) and runs it;
* one input ``[N, 3, H, W]`` of float32 with ``H = W = crop`` (or dynamic);
* an output ``[N, C]`` with ``C`` = the number of labels (default labels
  ``class_0``..``class_{C-1}``, with a warning);
* a batch of 2 runs: a model whose batch size is fixed at 1 is served one image at a time
  (``max_batch_size: 1`` in its config), with a warning.

Writing goes through the export's :class:`~service.export.writer.VersionWriter` (no torch
import there): staged, all or nothing, refused if the model exists with other labels or
preprocessing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service.export.writer import ExportError, VersionWriter, tool_versions
from service.repository import ModelConfig, Preprocessing, WeightsInfo, sha256_file

logger = logging.getLogger(__name__)

ARCHITECTURE = "imported-onnx"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ratio for ImageNet models: resize the short side to 256, crop 224.
RESIZE_PER_CROP = 256 / 224
DEFAULT_CROP = 224
EXIT_REFUSED = 2


class ImportRefused(Exception):
    """The file cannot be served as asked; the message says what was found and needed."""


@dataclass(frozen=True)
class Checked:
    """What the checks learned: number of classes and the largest batch it runs."""

    num_classes: int
    max_batch_size: int | None


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give three numbers R,G,B, e.g. 0.5,0.5,0.5")
    return values[0], values[1], values[2]


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line, blank lines dropped, duplicates refused (ambiguous top-k)."""
    try:
        labels = tuple(s for line in path.read_text("utf-8").splitlines() if (s := line.strip()))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"cannot read labels file {path}: {exc}") from None
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if not labels or duplicates:
        problem = f"repeats {', '.join(duplicates)}" if duplicates else "has no labels"
        raise ImportRefused(f"labels file {path} {problem} (expected one label per line)")
    return labels


def static_crop(path: Path) -> int | None:
    """The model's fixed input height, when it has one (the default crop)."""
    from service.engines.onnxruntime import graph_signature

    try:
        inputs, outputs = graph_signature(path)
    except Exception as exc:
        raise ImportRefused(f"{path}: ONNX Runtime cannot load it: {exc}") from None
    if len(inputs) != 1 or not outputs:
        raise ImportRefused(
            f"{path}: has {len(inputs)} inputs and {len(outputs)} outputs; an image "
            "classifier needs one input [N,3,H,W] and an output [N,C]"
        )
    (image,) = inputs
    shape = list(image.shape)
    if image.type != "tensor(float)" or len(shape) != 4 or shape[1] not in (3, None, "C"):
        raise ImportRefused(
            f"{path}: input {image.name!r} is {image.type} {shape}; needed: float32 [N,3,H,W]"
        )
    if len(outputs[0].shape) != 2:
        raise ImportRefused(
            f"{path}: output {outputs[0].name!r} is {outputs[0].shape}; needed [N,C]"
        )
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height != width:
        raise ImportRefused(f"{path}: input is {height}x{width}; only square inputs are served")
    return height if isinstance(height, int) else None


def check_model(path: Path, crop: int) -> Checked:
    """Load and run it with the serving engine on the CPU, as the server would."""
    from service.engines import EngineOptions, load_engine

    fixed = static_crop(path)
    if fixed is not None and fixed != crop:
        raise ImportRefused(f"{path}: the model takes {fixed}x{fixed} images but --crop is {crop}")
    engine = load_engine(
        "onnx", path, EngineOptions(threads=1), providers=("CPUExecutionProvider",), device="cpu"
    )
    try:
        try:
            logits = engine.run(np.zeros((1, 3, crop, crop), dtype=np.float32))
        except Exception as exc:
            raise ImportRefused(
                f"{path}: does not run on a 1x3x{crop}x{crop} input: {exc}"
            ) from None
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ImportRefused(f"{path}: output for one image is {logits.shape}; needed [1,C]")
        try:
            engine.run(np.zeros((2, 3, crop, crop), dtype=np.float32))
            max_batch: int | None = None
        except Exception:
            logger.warning("%s runs one image per batch only: served with max_batch_size 1", path)
            max_batch = 1
    finally:
        engine.close()
    return Checked(num_classes=int(logits.shape[1]), max_batch_size=max_batch)


def import_onnx(args: argparse.Namespace) -> tuple[int, Path]:
    source: Path = args.model
    if not source.is_file():
        raise ImportRefused(f"{source}: no such file")
    crop = args.crop or static_crop(source) or DEFAULT_CROP
    checked = check_model(source, crop)
    if args.labels is not None:
        labels = read_labels(args.labels)
        if len(labels) != checked.num_classes:
            raise ImportRefused(
                f"{args.labels} has {len(labels)} labels but {source} outputs "
                f"{checked.num_classes} classes"
            )
    else:
        labels = tuple(f"class_{i}" for i in range(checked.num_classes))
        logger.warning("no --labels: answering with class_0..class_%d", checked.num_classes - 1)
    config = ModelConfig(
        name=args.name,
        architecture=ARCHITECTURE,
        labels=labels,
        preprocessing=Preprocessing(
            resize_size=args.resize or round(crop * RESIZE_PER_CROP),
            crop_size=crop,
            interpolation=args.interpolation,
            mean=args.mean,
            std=args.std,
        ),
        engine="onnxruntime",
        max_batch_size=checked.max_batch_size,
        description=f"imported from {source.name}",
    )
    weights = WeightsInfo(origin="checkpoint", checkpoint=source.name, sha256=sha256_file(source))
    with VersionWriter(args.repository, config) as writer:
        shutil.copyfile(source, writer.artifact_path("onnx"))
        return writer.publish(weights=weights, parity={}, tools=tool_versions())


def _run(args: argparse.Namespace) -> int:
    try:
        version, folder = import_onnx(args)
    except ValidationError as exc:  # e.g. a --name the repository does not allow
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"resnet-serve import: {problems}", file=sys.stderr)
        return EXIT_REFUSED
    except (ImportRefused, ExportError) as exc:
        print(f"resnet-serve import: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"imported {args.model} as {args.name} version {version}: {folder}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "import",
        help="add an ONNX classifier file to the model repository (no PyTorch needed)",
        description="Check MODEL.onnx loads and runs in ONNX Runtime with an [N,3,H,W] "
        "float input and an [N,C] output, then write it as a new version of NAME.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument("--labels", type=Path, metavar="FILE", help="one class name per line")
    parser.add_argument("--resize", type=int, metavar="N", help="short side before the crop")
    parser.add_argument(
        "--crop", type=int, metavar="N", help="input size (default: the model's, else 224)"
    )
    parser.add_argument("--mean", type=_triple, default=IMAGENET_MEAN, metavar="R,G,B")
    parser.add_argument("--std", type=_triple, default=IMAGENET_STD, metavar="R,G,B")
    parser.add_argument(
        "--interpolation", choices=("nearest", "bilinear", "bicubic"), default="bilinear"
    )
    parser.add_argument("--repository", type=Path, default=Path("models"), metavar="DIR")
    parser.set_defaults(func=_run)
