"""A repository on disk whose versions load as fake engines: lifecycle without ONNX.

Each version folder holds a small placeholder artifact with its real checksum, so the
pool reads it as it reads any export (checksums verified); the engine factory then
builds a :class:`VersionEngine` whose logits name the version, so a test can tell which
version answered every request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.gate import record
from service.metrics import Metrics
from service.pool import ModelPool
from service.repository import (
    ModelConfig,
    ModelVersion,
    Preprocessing,
    VersionInfo,
    WeightsInfo,
    artifact_info,
    scan_repository,
    write_json,
)
from service.settings import Settings
from tests.fakes import FakeEngine

ADMIN_KEY = "admin-secret"


class VersionEngine(FakeEngine):
    """Logits ``[version, 0]`` per image: whoever reads them knows who answered."""

    def __init__(self, version: int, *, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.version = version

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        super().run(batch)
        out = np.zeros((len(batch), 2), dtype=np.float32)
        out[:, 0] = self.version
        return out


class Factory:
    """Engine factory: records every engine built, fails the versions asked, and counts
    how many engines are being built at once (loads of one model must not overlap)."""

    def __init__(self, *, delay_s: float = 0.0, fail: Iterable[int] = ()) -> None:
        self.engines: list[VersionEngine] = []
        self.delay_s = delay_s
        self.fail = set(fail)
        self.building = 0
        self.most_building = 0
        self._lock = threading.Lock()
        #: Set to hold engine creation (a load in progress) until the test opens it.
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, config: ModelConfig, version: ModelVersion, settings: Settings) -> Any:
        with self._lock:
            self.building += 1
            self.most_building = max(self.most_building, self.building)
        try:
            self.hold.wait(10)
            number = version.info.version
            if number in self.fail:
                raise RuntimeError(f"cannot create session for v{number}: corrupt artifact")
            engine = VersionEngine(number, delay_s=self.delay_s)
            self.engines.append(engine)
            return engine
        finally:
            with self._lock:
                self.building -= 1

    def of(self, version: int) -> list[VersionEngine]:
        return [e for e in self.engines if e.version == version]


def write_config(root: Path, name: str = "fake", *, mean: float = 0.5, **fields: Any) -> None:
    config = ModelConfig(
        name=name,
        architecture="fake",
        labels=("bright", "dark"),
        preprocessing=Preprocessing(resize_size=8, crop_size=8, mean=(mean,) * 3, std=(0.25,) * 3),
        **fields,
    )
    (root / name).mkdir(parents=True, exist_ok=True)
    write_json(root / name / "config.json", config)


def add_version(
    root: Path, number: int, name: str = "fake", *, size_bytes: int = 1000, golden: bool = False
) -> Path:
    """A version folder as an export leaves it (staged, then renamed into place); with
    ``golden``, the golden set its :class:`VersionEngine` answers, as an export records."""
    staging = root / name / f".staging-{number}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(bytes(number % 256 for _ in range(size_bytes)))
    config = ModelConfig.model_validate_json((root / name / "config.json").read_text())
    golden_set = (
        record(
            staging,
            config.preprocessing,
            {"onnx": VersionEngine(number).run},
            precision="fp32",
            recorded_by="fake",
        )
        if golden
        else None
    )
    info = VersionInfo(
        version=number,
        weights=WeightsInfo(origin="checkpoint", checkpoint=f"v{number}.th"),
        artifacts={"onnx": artifact_info(staging / "model.onnx")},
        golden=golden_set,
    )
    write_json(staging / "version.json", info)
    target = root / name / str(number)
    staging.rename(target)
    return target


def make_repository(root: Path, versions: Iterable[int] = (1,), **config: Any) -> Path:
    write_config(root, **config)
    for number in versions:
        add_version(root, number)
    return root


def lifecycle_pool(root: Path, factory: Factory, **overrides: Any) -> tuple[ModelPool, Settings]:
    overrides.setdefault("model_control_mode", "explicit")
    overrides.setdefault("admin_api_key", ADMIN_KEY)
    settings = Settings(repository=root, warmup=False, grpc_port=0, drain_timeout_s=5, **overrides)
    pool = ModelPool(scan_repository(root), settings, Metrics(), engine_factory=factory)
    return pool, settings


def sample(pool: ModelPool, name: str, outcome: str, metric: str = "model_loads") -> float:
    value = pool.metrics.registry.get_sample_value(
        f"resnet_serve_{metric}_total", {"model": name, "outcome": outcome}
    )
    return value or 0.0
