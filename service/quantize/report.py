"""How far the int8 model strays from its fp32 source, and the gate that refuses it.

Both models run through the serving engine (:func:`service.engines.load_engine`, the
session options the server uses) on the same preprocessed images, so the figures describe what
clients will see, not a differently-configured offline run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.engines import EngineOptions, load_engine
from service.postprocess import softmax
from service.quantize.calibration import ImageSet

#: Images per engine call while evaluating: large enough to amortise call overhead,
#: small enough that ResNet-50 activations stay well under a GiB.
EVAL_BATCH = 16


class QuantizationRefused(RuntimeError):
    """The int8 model disagrees with fp32 more than the caller allows; nothing was written."""


@dataclass(frozen=True)
class SetReport:
    """fp32 vs int8 on one image folder."""

    role: str  # "calibration" or "holdout"
    folder: str  # folder name only: version.json must not leak local paths
    images: int
    top1_agreement: float
    #: Largest, over images, of the largest per-class |p_fp32 - p_int8| (softmax).
    max_prob_drift: float
    #: Mean, over images, of that per-image largest drift.
    mean_prob_drift: float
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None

    def as_record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        line = (
            f"{self.role} ({self.folder}, {self.images} images): top-1 agreement "
            f"{self.top1_agreement:.2%}, probability drift max {self.max_prob_drift:.4f} "
            f"mean {self.mean_prob_drift:.4f}"
        )
        if self.accuracy_fp32 is not None and self.accuracy_int8 is not None:
            delta = (self.accuracy_int8 - self.accuracy_fp32) * 100
            line += (
                f", accuracy fp32 {self.accuracy_fp32:.2%} int8 {self.accuracy_int8:.2%} "
                f"({delta:+.2f} points)"
            )
        return line


def run_model(artifact: Path, images: ImageSet) -> npt.NDArray[np.float32]:
    """Logits of every image, through the serving engine with the server's settings."""
    engine = load_engine("onnx", artifact, EngineOptions(), device="cpu")
    try:
        chunks = [
            engine.run(images.inputs[i : i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)
        ]
    finally:
        engine.close()
    return np.concatenate(chunks)


def compare(
    role: str,
    images: ImageSet,
    logits_fp32: npt.NDArray[np.float32],
    logits_int8: npt.NDArray[np.float32],
) -> SetReport:
    top_fp32, top_int8 = logits_fp32.argmax(axis=1), logits_int8.argmax(axis=1)
    drift = np.abs(softmax(logits_fp32) - softmax(logits_int8)).max(axis=1)
    accuracy_fp32 = accuracy_int8 = None
    if images.labels is not None:
        accuracy_fp32 = float((top_fp32 == images.labels).mean())
        accuracy_int8 = float((top_int8 == images.labels).mean())
    return SetReport(
        role=role,
        folder=images.folder.name,
        images=len(images),
        top1_agreement=float((top_fp32 == top_int8).mean()),
        max_prob_drift=float(drift.max()),
        mean_prob_drift=float(drift.mean()),
        accuracy_fp32=accuracy_fp32,
        accuracy_int8=accuracy_int8,
    )


def evaluate(fp32: Path, int8: Path, image_sets: dict[str, ImageSet]) -> list[SetReport]:
    """One :class:`SetReport` per image set (e.g. calibration and hold-out)."""
    return [
        compare(role, images, run_model(fp32, images), run_model(int8, images))
        for role, images in image_sets.items()
    ]


def check_agreement(reports: list[SetReport], min_agreement: float) -> None:
    """Raise :class:`QuantizationRefused` if any set agrees less than ``min_agreement``.

    Every evaluated set must pass, the hold-out one above all: agreement on the images
    the ranges were fitted to is an optimistic figure.
    """
    failing = [r for r in reports if r.top1_agreement < min_agreement]
    if failing:
        details = "; ".join(r.describe() for r in failing)
        raise QuantizationRefused(
            f"int8 model refused: top-1 agreement with fp32 is below the required "
            f"{min_agreement:.2%} ({details}). Try another --method, more or more "
            f"representative calibration images, or lower --min-agreement if this "
            f"accuracy cost is acceptable."
        )
