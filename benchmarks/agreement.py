"""Top-1 agreement of the torch (GPU) preprocessing with the exact CPU path, through a model.

The torch backend changes pixels (nvJPEG or torchvision's decoder, a float resize), so
whether that changes predictions is measured, not assumed: each image is run through the
same engine twice, once from the exact Pillow path and once from the torch backend, and
the two top-1 classes are compared. Used by tests/test_preprocess_torch.py (on CPU), by
scripts/gpu-check.sh (on a GPU) and from the command line::

    python -m benchmarks.agreement models/resnet50 ../shared/data/photos --device cuda
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from service.engines import EngineOptions, load_engine
from service.engines.base import Engine
from service.preprocess import Limits, PendingJpeg, Preprocessor
from service.preprocess_torch import TorchPreprocessor, as_host_array
from service.repository import ModelEntry, load_model
from service.settings import Settings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


@dataclass(frozen=True)
class Agreement:
    """How often both paths give the same top-1, over ``images`` images.

    ``deferred``: images the backend decoded itself (JPEGs); the others took the exact
    path in both runs. ``all_resized``: agreement when every image (any format, decoded
    by Pillow) goes through the torch resize, crop and normalisation.
    """

    model: str
    device: str
    images: int
    deferred: int
    top1_agreement: float
    all_resized_agreement: float
    max_abs_input_diff: float


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def measure(entry: ModelEntry, engine: Engine, files: Sequence[Path], device: str) -> Agreement:
    """Run ``files`` through ``engine`` from both preprocessing paths; compare top-1."""
    limits = Limits(max_pixels=Settings.model_construct().max_image_pixels)
    exact = Preprocessor(entry.config.preprocessing, limits)
    backend = TorchPreprocessor(entry.config.preprocessing, limits, device=device)
    datas = [path.read_bytes() for path in files]
    reference = np.stack([exact(data) for data in datas])
    items = [backend.decode(backend.open(data)) for data in datas]
    collated = backend.collate(items)
    if collated.rejected:
        raise RuntimeError(f"the torch backend rejected {sorted(collated.rejected)}")
    candidate = as_host_array(collated.batch)
    resized = as_host_array(backend.normalise([_pillow_rgb(data) for data in datas]))
    top1 = _top1(engine, reference)
    return Agreement(
        model=entry.config.name,
        device=device,
        images=len(files),
        deferred=sum(isinstance(item, PendingJpeg) for item in items),
        top1_agreement=float(np.mean(_top1(engine, candidate) == top1)),
        all_resized_agreement=float(np.mean(_top1(engine, resized) == top1)),
        max_abs_input_diff=float(np.abs(candidate - reference).max()),
    )


def _pillow_rgb(data: bytes) -> torch.Tensor:
    """Pillow's decode, upright RGB, as a uint8 (3, h, w) tensor: the torch resize alone."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = ImageOps.exif_transpose(image.convert("RGB"))
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


def _top1(engine: Engine, batch: np.ndarray, chunk: int = 32) -> np.ndarray:
    rows = [engine.run(batch[i : i + chunk]) for i in range(0, len(batch), chunk)]
    return np.concatenate(rows).argmax(axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a models/<name> folder")
    parser.add_argument("images", type=Path, help="a folder of images (searched recursively)")
    parser.add_argument("--device", default="cpu", help="torch device of the backend")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many images")
    args = parser.parse_args(argv)
    entry = load_model(args.model)
    version = entry.versions[-1]
    settings = Settings.model_construct()
    options = EngineOptions.of(settings)
    engine = load_engine("onnx", version.artifact_path("onnx"), options, device="cpu")
    files = image_files(args.images)
    files = files[: args.limit] if args.limit else files
    print(json.dumps(asdict(measure(entry, engine, files, args.device))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
