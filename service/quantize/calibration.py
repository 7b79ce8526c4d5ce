"""Calibration and evaluation images, preprocessed exactly as the server does.

Static quantization fixes each activation's int8 range from the values seen on
calibration images, so those images must reach the model through the *same* pipeline
as a served request: :class:`service.preprocess.Preprocessor` with the model's own
``config.preprocessing``. A calibration set fed through a re-implemented transform
would calibrate ranges for inputs the server never produces.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from onnxruntime.quantization import CalibrationDataReader

from service.errors import ServiceError
from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing
from service.settings import Settings

logger = logging.getLogger(__name__)

#: File suffixes treated as images; everything else in the folder (labels.csv,
#: SOURCES.md, ...) is ignored rather than reported as a broken image.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
LABELS_FILE = "labels.csv"


class CalibrationError(ValueError):
    """The calibration or hold-out folder cannot be used (missing, empty, unreadable)."""


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed images of one folder, and their labels where the folder has them."""

    folder: Path
    files: tuple[str, ...]  # relative to ``folder``, POSIX style, sorted
    inputs: npt.NDArray[np.float32]  # (N, 3, H, W)
    labels: npt.NDArray[np.int64] | None  # (N,), None when the folder carries no labels
    skipped: tuple[str, ...] = ()  # files that failed to decode, with the reason

    def __len__(self) -> int:
        return len(self.files)


def find_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, sorted for reproducible batches)."""
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist or is not a folder")
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _labels_from_csv(folder: Path, class_names: Sequence[str]) -> dict[str, int]:
    """``labels.csv`` with a ``path`` column and ``label_index`` or ``label_name``."""
    index_of = {name: i for i, name in enumerate(class_names)}
    labels: dict[str, int] = {}
    with (folder / LABELS_FILE).open(newline="", encoding="utf-8") as fh:
        for row_number, row in enumerate(csv.DictReader(fh), start=2):
            path = (row.get("path") or "").strip()
            if "label_index" in row and (row["label_index"] or "").strip():
                value = int(row["label_index"])
            elif (row.get("label_name") or "").strip() in index_of:
                value = index_of[row["label_name"].strip()]
            else:
                raise CalibrationError(
                    f"{folder / LABELS_FILE} line {row_number}: needs 'path' and a "
                    f"'label_index' or a 'label_name' among the model's labels"
                )
            if not 0 <= value < len(class_names):
                raise CalibrationError(
                    f"{folder / LABELS_FILE} line {row_number}: label {value} is outside "
                    f"the model's {len(class_names)} classes"
                )
            labels[path] = value
    return labels


def read_labels(
    folder: Path, files: Sequence[str], class_names: Sequence[str]
) -> npt.NDArray[np.int64] | None:
    """Labels from ``labels.csv``, else from class-named sub-folders, else None.

    A folder is labelled only if *every* image gets a label: an accuracy over the
    labelled subset of a partly-labelled folder would be easy to misread.
    """
    if (folder / LABELS_FILE).is_file():
        by_path = _labels_from_csv(folder, class_names)
        missing = [f for f in files if f not in by_path]
        if missing:
            raise CalibrationError(
                f"{folder / LABELS_FILE} has no label for {len(missing)} image(s), "
                f"e.g. {missing[0]!r}"
            )
        return np.asarray([by_path[f] for f in files], dtype=np.int64)
    index_of = {name: i for i, name in enumerate(class_names)}
    parents = [f.split("/")[0] if "/" in f else None for f in files]
    if parents and all(p in index_of for p in parents):
        return np.asarray([index_of[p] for p in parents], dtype=np.int64)  # type: ignore[index]
    return None


def load_images(
    folder: Path,
    preprocessing: Preprocessing,
    class_names: Sequence[str],
    *,
    max_images: int | None = None,
) -> ImageSet:
    """Decode and preprocess every image of ``folder`` as a served request would be."""
    defaults = Settings.model_fields
    limits = Limits(max_pixels=defaults["max_image_pixels"].default)
    preprocessor = Preprocessor(preprocessing, limits)
    paths = find_images(folder)
    if max_images is not None:
        paths = paths[:max_images]
    files: list[str] = []
    tensors: list[npt.NDArray[np.float32]] = []
    skipped: list[str] = []
    for path in paths:
        relative = path.relative_to(folder).as_posix()
        try:
            tensors.append(preprocessor(path.read_bytes()))
        except (ServiceError, OSError) as exc:
            # One odd file must not sink a calibration run; it is counted and reported.
            skipped.append(f"{relative}: {exc}")
            logger.warning("skipping %s: %s", path, exc)
            continue
        files.append(relative)
    if not files:
        raise CalibrationError(
            f"no usable images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}; "
            f"{len(skipped)} failed to decode)"
        )
    return ImageSet(
        folder=folder,
        files=tuple(files),
        inputs=np.stack(tensors),
        labels=read_labels(folder, files, class_names),
        skipped=tuple(skipped),
    )


class CalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds an :class:`ImageSet` to ONNX Runtime's calibrator in batches.

    ``__len__`` and ``set_range`` let ``quantize_static`` (option ``CalibStridedMinMax``)
    collect statistics one batch at a time: the histogram calibrators (entropy,
    percentile) otherwise keep every intermediate activation of every image in memory
    at once, which for ResNet-50 is gigabytes for a few hundred images.
    """

    def __init__(self, images: ImageSet, input_name: str, batch_size: int) -> None:
        self._batches = [
            images.inputs[i : i + batch_size] for i in range(0, len(images), batch_size)
        ]
        self._input_name = input_name
        self._start, self._end = 0, len(self._batches)
        self._next = 0

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self._batches))
        self._next = self._start

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        if self._next >= self._end:
            return None
        batch = self._batches[self._next]
        self._next += 1
        return {self._input_name: batch}

    def rewind(self) -> None:
        self.set_range(0, len(self._batches))
