"""The export parity check runs artifacts through the serving engines (service/export/parity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engines import create_engine
from service.engines.onnxruntime import OnnxRuntimeEngine
from service.engines.torchscript import TorchScriptEngine
from service.export import parity
from service.repository import load_model
from service.settings import Settings
from tests.conftest import export


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("parity")
    export(repository, "resnet20", "--weights", "random", "--format", "onnx",
           "--format", "torchscript")  # fmt: skip
    return repository / "resnet20"


def session_options(engine: OnnxRuntimeEngine) -> dict[str, object]:
    options = engine._session.get_session_options()
    return {
        "graph_optimization_level": options.graph_optimization_level,
        "execution_mode": options.execution_mode,
        "inter_op_num_threads": options.inter_op_num_threads,
        "intra_op_num_threads": options.intra_op_num_threads,
        "spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
    }


def test_parity_runs_onnx_through_the_serving_engine_with_its_session_options(
    resnet20: Path,
) -> None:
    entry = load_model(resnet20)
    version = entry.versions[-1]
    run = parity.RUNNERS["onnx"](version.artifact_path("onnx"))
    checked = run.__self__  # type: ignore[attr-defined]
    assert isinstance(checked, OnnxRuntimeEngine)
    served = create_engine(entry.config.model_copy(update={"device": "cpu"}), version, Settings())
    assert isinstance(served, OnnxRuntimeEngine)
    assert session_options(checked) == session_options(served)
    assert session_options(checked)["spinning"] == "0"  # the server's default, not ORT's


def test_parity_runs_torchscript_through_the_serving_engine(resnet20: Path) -> None:
    version = load_model(resnet20).versions[-1]
    run = parity.RUNNERS["torchscript"](version.artifact_path("torchscript"))
    assert isinstance(run.__self__, TorchScriptEngine)  # type: ignore[attr-defined]
