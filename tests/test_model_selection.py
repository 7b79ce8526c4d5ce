"""``--models a,b`` serves only those models; a name the repository lacks is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.app import create_app
from service.cli import main
from service.errors import ModelConfigError
from service.repository import scan_repository
from service.settings import Settings


@pytest.fixture
def two_models(model_repository: Path, tmp_path: Path) -> Path:
    """``resnet18`` and a copy named ``other``, plus a broken folder nobody asks for."""
    root = tmp_path / "models"
    shutil.copytree(model_repository, root)
    shutil.copytree(root / "resnet18", root / "other")
    config = root / "other" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "name": "other"}))
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    return root


def test_only_the_selected_models_are_read(two_models: Path) -> None:
    entries = scan_repository(two_models, only=("other",))
    assert [e.config.name for e in entries] == ["other"]
    with pytest.raises(ModelConfigError, match="broken"):
        scan_repository(two_models)  # without a selection, every folder is read


def test_an_unknown_selected_model_is_refused_naming_the_models_that_exist(
    two_models: Path,
) -> None:
    with pytest.raises(ModelConfigError) as info:
        scan_repository(two_models, only=("resnet18", "resnet50"))
    message = str(info.value)
    assert "no model 'resnet50'" in message
    assert "it has: broken, other, resnet18" in message


def test_the_app_serves_only_the_selected_models(two_models: Path) -> None:
    settings = Settings(repository=two_models, models="resnet18", grpc_port=0)
    pool = create_app(settings).state.models
    assert {m.entry.config.name for m in pool.all()} == {"resnet18"}
    assert pool.default_name == "resnet18"


def test_default_model_outside_the_selection_is_refused() -> None:
    with pytest.raises(ValueError, match=r"default_model \('b'\) must be one of models \(a\)"):
        Settings(models="a", default_model="b")


def test_a_selection_naming_no_model_is_refused() -> None:
    with pytest.raises(ValueError, match="names no model"):
        Settings(models=" , ")


def test_selection_keeps_order_and_drops_repeats() -> None:
    assert Settings(models="b, a,b").model_names() == ("b", "a")
    assert Settings().model_names() is None


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--models", "resnet18,nope"], "no model 'nope'"),
        (["--default-model", "nope"], "default model 'nope' is not in the repository"),
    ],
)
def test_serve_with_an_unknown_model_is_one_line_exit_2(
    two_models: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    shutil.rmtree(two_models / "broken")
    code = main(["serve", "--repository", str(two_models), "--grpc-port", "0", *flags])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("resnet-serve: cannot serve:") and expected in line, line
    assert "other, resnet18" in line, line
