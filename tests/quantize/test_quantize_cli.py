"""``resnet-serve quantize``: what it writes, and when it refuses to write anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from service.cli import main
from service.quantize.calibration import CalibrationError, read_labels
from service.quantize.cli import EXIT_REFUSED
from service.repository import load_model
from tests.quantize.conftest import copy_repository


def test_int8_version_json_records_how_it_was_made(
    int8_repository: Path, cifar_sample_dir: Path
) -> None:
    entry = load_model(int8_repository / "resnet20")  # also verifies the sha256s
    fp32, int8 = entry.versions
    assert (fp32.info.precision, int8.info.precision) == ("fp32", "int8")
    assert int8.info.weights == fp32.info.weights
    assert set(int8.info.artifacts) == {"onnx"}
    record = int8.info.quantization
    assert record is not None
    assert record["calibration_dir"] == cifar_sample_dir.name  # a name, never a local path
    assert record["calibration_images"] == 300 and record["calibration_skipped"] == 0
    assert record["source_version"] == 1 and record["method"] == "percentile"
    assert (record["activation_type"], record["weight_type"]) == ("QUInt8", "QInt8")
    assert record["per_channel"] is True and record["format"] == "QDQ"
    assert 0.95 <= record["top1_agreement"] <= 1.0
    assert 0.0 <= record["mean_prob_drift"] <= record["max_prob_drift"] <= 1.0
    assert abs(record["accuracy_int8"] - record["accuracy_fp32"]) <= 0.01
    # Nothing but finished versions in the model folder (no staging leftovers).
    assert sorted(p.name for p in entry.path.iterdir()) == ["1", "2", "config.json"]


def test_int8_artifact_holds_int8_weights_in_qdq_form(int8_repository: Path) -> None:
    model = onnx.load(str(int8_repository / "resnet20" / "2" / "model.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("Conv")
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= ops.count("Conv")  # every convolution's filters


def uniform_images(folder: Path, count: int) -> Path:
    """A useless calibration set: flat grey squares give near-zero activation ranges."""
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (32, 32), (128, 128, 128)).save(folder / f"grey{i}.png")
    return folder


def test_degenerate_calibration_is_refused_on_the_holdout_and_writes_nothing(
    cifar_repository: Path,
    cifar_sample_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = copy_repository(cifar_repository, tmp_path / "models")
    calibration = uniform_images(tmp_path / "grey", 4)
    status = main(
        [
            "quantize",
            "resnet20",
            "--calibration",
            str(calibration),
            "--holdout",
            str(cifar_sample_dir),
            "--repository",
            str(repository),
        ]
    )
    assert status == EXIT_REFUSED
    error = capsys.readouterr().err
    assert "int8 model refused" in error and "below the required 98.00%" in error
    assert "holdout (cifar10-sample, 300 images)" in error
    assert sorted(p.name for p in (repository / "resnet20").iterdir()) == ["1", "config.json"]


def test_min_agreement_above_what_int8_reached_is_refused(
    int8_repository: Path, cifar_sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = load_model(int8_repository / "resnet20").versions[1].info.quantization
    assert record is not None and record["top1_agreement"] < 1.0  # the premise of the test
    before = sorted(p.name for p in (int8_repository / "resnet20").iterdir())
    status = main(
        [
            "quantize",
            "resnet20",
            "--version",
            "1",
            "--calibration",
            str(cifar_sample_dir),
            "--repository",
            str(int8_repository),
            "--min-agreement",
            "1.0",
        ]
    )
    assert status == EXIT_REFUSED
    assert "below the required 100.00%" in capsys.readouterr().err
    assert sorted(p.name for p in (int8_repository / "resnet20").iterdir()) == before


def test_min_agreement_given_as_a_percentage_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", "m", "--calibration", ".", "--min-agreement", "98"])
    assert exit_info.value.code == 2
    assert "fraction between 0 and 1" in capsys.readouterr().err


def test_export_with_quantize_but_no_calibration_fails_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["export", "resnet20", "--quantize", "int8", "--repository", str(tmp_path / "m")])
    assert status == 2
    assert "--quantize int8 needs --calibration" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_export_with_quantize_but_no_onnx_format_fails_before_exporting(
    tmp_path: Path, cifar_sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["export", "resnet20", "--format", "torchscript", "--quantize", "int8"]
    args += ["--calibration", str(cifar_sample_dir), "--repository", str(tmp_path / "m")]
    assert main(args) == 2
    assert "add --format onnx" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_unknown_version_is_a_usage_error(
    int8_repository: Path, cifar_sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["quantize", "resnet20", "--version", "2", "--calibration", str(cifar_sample_dir)]
    assert main([*args, "--repository", str(int8_repository)]) == 2
    assert "no fp32 ONNX version 2" in capsys.readouterr().err  # v2 is the int8 one


def test_labels_come_from_class_folders_when_there_is_no_labels_csv(tmp_path: Path) -> None:
    files = ["cat/a.png", "dog/b.png", "cat/c.png"]
    assert np.array_equal(read_labels(tmp_path, files, ("dog", "cat")), [1, 0, 1])
    assert read_labels(tmp_path, ["a.png", "cat/c.png"], ("dog", "cat")) is None


def test_labels_csv_must_cover_every_image(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,label_index\na.png,0\n")
    with pytest.raises(CalibrationError, match="no label for 1 image"):
        read_labels(tmp_path, ["a.png", "b.png"], ("dog", "cat"))
