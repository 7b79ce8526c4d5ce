"""Which engine serves a version (service/engines/__init__.py: select_engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engines import select_engine
from service.repository import ArtifactInfo, ModelConfig, ModelVersion, VersionInfo, WeightsInfo
from service.settings import Settings
from tests.fakes import fake_entry

ONNX = ArtifactInfo(file="model.onnx", sha256="0" * 64, bytes=0)
TS = ArtifactInfo(file="model.pt", sha256="1" * 64, bytes=0)


def version(**artifacts: ArtifactInfo) -> ModelVersion:
    info = VersionInfo(version=1, weights=WeightsInfo(origin="random"), artifacts=artifacts)
    return ModelVersion(info, Path("/nowhere/1"))


def config(tmp_path: Path, engine: str | None = None) -> ModelConfig:
    base = fake_entry(tmp_path).config
    return base.model_copy(update={"engine": engine})


def test_onnx_first_when_nothing_is_asked(tmp_path: Path) -> None:
    settings = Settings()
    assert select_engine(config(tmp_path), version(onnx=ONNX, torchscript=TS), settings) == (
        "onnxruntime"
    )
    assert select_engine(config(tmp_path), version(torchscript=TS), settings) == "torchscript"


def test_service_override_applies_only_where_its_artifact_exists(tmp_path: Path) -> None:
    settings = Settings(engine="torchscript")
    both = version(onnx=ONNX, torchscript=TS)
    assert select_engine(config(tmp_path), both, settings) == "torchscript"
    assert select_engine(config(tmp_path), version(onnx=ONNX), settings) == "onnxruntime"


def test_config_engine_wins_over_artifact_order(tmp_path: Path) -> None:
    both = version(onnx=ONNX, torchscript=TS)
    assert select_engine(config(tmp_path, "torchscript"), both, Settings()) == "torchscript"


def test_config_engine_without_its_artifact_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no torchscript artifact"):
        select_engine(config(tmp_path, "torchscript"), version(onnx=ONNX), Settings())


def test_engine_options_defaults_are_the_servers_defaults() -> None:
    """Tools run artifacts with EngineOptions(): it must be what a plain serve runs."""
    from service.engines import EngineOptions
    from service.settings import Settings

    assert EngineOptions() == EngineOptions.of(Settings())
