"""The model repository refuses broken folders with a message naming them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.errors import ModelConfigError
from service.repository import load_model, scan_repository


@pytest.fixture
def repo_copy(model_repository: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(model_repository, target)
    return target


def test_exported_model_loads_with_verified_checksums(repo_copy: Path) -> None:
    (entry,) = scan_repository(repo_copy)
    assert entry.config.name == "resnet18"
    assert len(entry.config.labels) == 1000
    assert entry.default_version.info.weights.display == "random (untrained)"
    assert "onnx" in entry.default_version.info.artifacts


def test_missing_config_names_the_folder(repo_copy: Path) -> None:
    (repo_copy / "resnet18" / "config.json").unlink()
    with pytest.raises(ModelConfigError, match=r"resnet18.*missing config.json"):
        scan_repository(repo_copy)


def test_invalid_field_names_file_and_field(repo_copy: Path) -> None:
    path = repo_copy / "resnet18" / "config.json"
    config = json.loads(path.read_text())
    config["preprocessing"]["crop_size"] = -1
    path.write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match=r"config.json.*preprocessing.crop_size"):
        load_model(repo_copy / "resnet18")


def test_name_must_match_folder(repo_copy: Path) -> None:
    (repo_copy / "resnet18").rename(repo_copy / "other")
    with pytest.raises(ModelConfigError, match="differs from the folder name"):
        scan_repository(repo_copy)


def test_modified_artifact_fails_its_checksum(repo_copy: Path) -> None:
    artifact = repo_copy / "resnet18" / "1" / "model.onnx"
    with artifact.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelConfigError, match=r"resnet18/1.*sha256"):
        scan_repository(repo_copy)


def test_no_versions_is_an_error(repo_copy: Path) -> None:
    shutil.rmtree(repo_copy / "resnet18" / "1")
    with pytest.raises(ModelConfigError, match="no version folders"):
        scan_repository(repo_copy)


def test_missing_repository_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="resnet-serve export"):
        scan_repository(tmp_path / "nowhere")
