"""A fake engine and an in-memory model pool, so faults and stalls are deterministic.

The fake implements :class:`service.engines.base.Engine`; its logits are the per-image
channel-0 mean, so every answer is traceable to its input. It fails any batch holding
an image whose mean is above :data:`FAIL_ABOVE` (a white image after normalisation), and
``gate`` holds every batch until the test opens it (bounded, so nothing can hang).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.metrics import Metrics
from service.pool import ModelPool
from service.repository import (
    ArtifactInfo,
    ModelConfig,
    ModelEntry,
    ModelVersion,
    Preprocessing,
    VersionInfo,
    WeightsInfo,
)
from service.settings import Settings

#: mean=0.5, std=0.25: white normalises to +2.0, black to -2.0.
FAIL_ABOVE = 1.9
GATE_TIMEOUT_S = 20.0


class FakeEngine:
    """Engine protocol: ``run`` blocks on ``gate``, fails on white images, logs batch sizes."""

    name = "onnxruntime"
    provider = "FakeProvider"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()  # set when a batch reaches the engine
        self.batches: list[list[float]] = []
        self.closed = False

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.started.set()
        self.gate.wait(GATE_TIMEOUT_S)
        means = batch[:, 0].mean(axis=(1, 2))
        self.batches.append([float(m) for m in means])
        if np.any(means > FAIL_ABOVE):
            raise RuntimeError("fake engine: marked input in this batch")
        return np.stack([means, -means], axis=1).astype(np.float32)

    def warmup(self, batch_sizes: tuple[int, ...]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def fake_entry(folder: Path, name: str = "fake") -> ModelEntry:
    """A model entry whose (never opened) artifact is declared but absent on disk."""
    config = ModelConfig(
        name=name,
        architecture="fake",
        labels=("bright", "dark"),
        preprocessing=Preprocessing(resize_size=8, crop_size=8, mean=(0.5,) * 3, std=(0.25,) * 3),
    )
    info = VersionInfo(
        version=1,
        weights=WeightsInfo(origin="random"),
        artifacts={"onnx": ArtifactInfo(file="model.onnx", sha256="0" * 64, bytes=0)},
    )
    return ModelEntry(config=config, path=folder, versions=(ModelVersion(info, folder / "1"),))


def fake_pool(folder: Path, settings: Settings) -> ModelPool:
    return ModelPool([fake_entry(folder)], settings, Metrics())
