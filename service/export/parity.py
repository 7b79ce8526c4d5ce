"""Export faithfulness: every artifact against PyTorch eager on the same inputs.

An exporter bug (a wrong padding, a specialised batch size, an op lowered differently)
usually still produces a valid file; only comparing logits catches it. Inputs are
random tensors at several batch sizes (exercising the dynamic batch axis) plus, when
given, real images preprocessed the model's way, since random noise can hide errors
that only show on natural image statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from service.engines import EngineOptions, load_engine
from service.export import DEFAULT_PARITY_BOUND
from service.repository import ArtifactFormat, ParityReport, Preprocessing

logger = logging.getLogger(__name__)

#: Batch sizes of the random inputs: 1, and one other than the traced size (2), so a
#: batch size baked into the graph shows. Few inputs: a 224x224 ResNet-50 forward costs
#: ~0.5 s per image on a small CPU, and the parity run makes three per input.
RANDOM_BATCH_SIZES = (1, 3)
RANDOM_SEED = 1234
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
#: Keeps export time bounded when pointed at a large photo folder.
MAX_IMAGES = 512
#: Images per batch: big enough to exercise batching, small enough for CPU memory.
IMAGE_BATCH = 32

Runner = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


class ParityError(Exception):
    """An artifact's logits differ from PyTorch eager beyond the bound."""


@dataclass(frozen=True)
class ParityInputs:
    batches: tuple[torch.Tensor, ...]
    source: str

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.batches)


def load_image(path: Path, spec: Preprocessing) -> torch.Tensor:
    """torchvision's ``ImageClassification`` on a Pillow image, as the weights expect.

    Uses torchvision's own functions (not the service's preprocessing) so the parity
    check and the accuracy tests are an independent reference for the service.
    """
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    interpolation = InterpolationMode(spec.interpolation)
    rgb = tvf.resize(rgb, [spec.resize_size], interpolation=interpolation, antialias=True)
    rgb = tvf.center_crop(rgb, [spec.crop_size])
    tensor = tvf.convert_image_dtype(tvf.pil_to_tensor(rgb), torch.float32)
    return tvf.normalize(tensor, list(spec.mean), list(spec.std))


def image_files(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursively, so class folders work), sorted."""
    if not directory.is_dir():
        raise ParityError(f"--parity-images {directory} is not a directory")
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def build_inputs(
    input_size: int, spec: Preprocessing, image_dir: Path | None = None
) -> ParityInputs:
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    batches = [
        torch.randn(n, 3, input_size, input_size, generator=generator) for n in RANDOM_BATCH_SIZES
    ]
    source = f"random ({sum(RANDOM_BATCH_SIZES)})"
    if image_dir is not None:
        images = []
        for path in image_files(image_dir)[:MAX_IMAGES]:
            try:
                images.append(load_image(path, spec))
            except (OSError, UnidentifiedImageError) as exc:
                logger.warning("parity: skipping unreadable image %s: %s", path, exc)
        if not images:
            raise ParityError(f"--parity-images {image_dir}: no readable images found")
        stacked = torch.stack(images)
        batches.extend(stacked.split(IMAGE_BATCH))
        source += f" + images ({len(images)} from {image_dir.name})"
    return ParityInputs(tuple(batches), source)


def engine_runner(fmt: ArtifactFormat) -> Callable[[Path], Runner]:
    """The artifact run by the serving engine class, with the server's default settings.

    The check must run the code the server runs: the same engine class, session
    options and (for TorchScript) load-then-freeze, on the CPU.
    """

    def open_runner(path: Path) -> Runner:
        return load_engine(fmt, path, EngineOptions(), device="cpu").run

    return open_runner


RUNNERS: dict[str, Callable[[Path], Runner]] = {
    "onnx": engine_runner("onnx"),
    "torchscript": engine_runner("torchscript"),
}


def top1_agreement(
    reference: npt.NDArray[np.float32], candidate: npt.NDArray[np.float32], bound: float
) -> float:
    """Share of inputs whose top-1 class matches.

    A different argmax still counts as agreeing when the reference scores both classes
    within ``bound`` of each other: that is a numerical tie (common with random weights),
    not an export error, and the logit bound already limits it.
    """
    ref_top = reference.argmax(axis=1)
    cand_top = candidate.argmax(axis=1)
    rows = np.arange(len(reference))
    tie = reference[rows, ref_top] - reference[rows, cand_top] <= bound
    return float(np.mean((ref_top == cand_top) | tie))


def compare(
    module: nn.Module,
    artifacts: dict[ArtifactFormat, Path],
    inputs: ParityInputs,
    *,
    bound: float = DEFAULT_PARITY_BOUND,
) -> dict[ArtifactFormat, ParityReport]:
    """One :class:`ParityReport` per artifact format; raises nothing (see :func:`enforce`)."""
    with torch.inference_mode():
        reference = np.concatenate([module.eval()(b).numpy() for b in inputs.batches])
    reports: dict[ArtifactFormat, ParityReport] = {}
    for fmt, path in artifacts.items():
        run = RUNNERS[fmt](path)
        candidate = np.concatenate([run(b.numpy()) for b in inputs.batches])
        if candidate.shape != reference.shape:
            raise ParityError(
                f"{fmt}: logits shape {candidate.shape} differs from eager {reference.shape}"
            )
        reports[fmt] = ParityReport(
            max_abs_logit_diff=float(np.abs(candidate - reference).max()),
            bound=bound,
            top1_agreement=top1_agreement(reference, candidate, bound),
            inputs=inputs.count,
            input_source=inputs.source,
        )
    return reports


def describe(fmt: str, report: ParityReport) -> str:
    verdict = "ok" if passed(report) else "FAILED"
    return (
        f"{fmt:<11} max |logit diff| {report.max_abs_logit_diff:.2e} (bound {report.bound:.0e}), "
        f"top-1 agreement {report.top1_agreement:.1%} on {report.inputs} inputs: {verdict}"
    )


def passed(report: ParityReport) -> bool:
    return report.max_abs_logit_diff <= report.bound and report.top1_agreement >= 1.0


def enforce(reports: dict[ArtifactFormat, ParityReport]) -> None:
    """Raise :class:`ParityError` naming every format that fails its bound."""
    failed = [describe(fmt, r) for fmt, r in reports.items() if not passed(r)]
    if failed:
        raise ParityError(
            "exported model differs from PyTorch eager; nothing was written:\n  "
            + "\n  ".join(failed)
        )
