"""``resnet-serve export`` end to end: what lands in the repository, and what does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.cli import main
from service.export import parity
from service.export.architectures import get_architecture
from service.export.parity import load_image
from service.export.weights import load_model as load_weights
from service.repository import ARTIFACT_FILE, load_model, sha256_file

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def resnet18_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18 with random weights in both formats: the quick-start path, minus weights."""
    repository = tmp_path_factory.mktemp("models")
    args = ["export", "resnet18", "--weights", "random", "--repository", str(repository)]
    assert main([*args, "--format", "onnx", "--format", "torchscript"]) == 0
    return repository


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _leftovers(repository: Path) -> list[str]:
    return sorted(p.name for p in repository.iterdir() if p.name.startswith("."))


def test_export_passes_the_repository_loader(resnet18_repository: Path) -> None:
    entry = load_model(resnet18_repository / "resnet18", verify_checksums=True)
    config = entry.config
    assert (config.name, config.architecture, len(config.labels)) == ("resnet18", "resnet18", 1000)
    assert config.labels[0] == "tench"
    assert (config.preprocessing.resize_size, config.preprocessing.crop_size) == (256, 224)
    assert config.engine is None
    version = entry.default_version
    assert version.info.version == 1
    assert version.info.weights.origin == "random"
    assert set(version.info.artifacts) == {"onnx", "torchscript"}
    for fmt, art in version.info.artifacts.items():
        path = version.artifact_path(fmt)
        assert art.sha256 == sha256_file(path)
        assert art.bytes == path.stat().st_size > 40_000_000  # 11.7 M fp32 params inside
    for report in version.info.parity.values():
        assert report.max_abs_logit_diff <= report.bound == 1e-3
        assert report.top1_agreement == 1.0
        assert report.inputs == sum(parity.RANDOM_BATCH_SIZES)
    assert {"torch", "torchvision", "onnx", "onnxruntime", "python"} <= set(version.info.tools)
    assert _leftovers(resnet18_repository) == []


def test_onnx_has_a_dynamic_batch_axis_and_matches_eager(resnet18_repository: Path) -> None:
    path = resnet18_repository / "resnet18" / "1" / ARTIFACT_FILE["onnx"]
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    # Random weights are seeded: loading them again gives the exported model.
    reference = load_weights(get_architecture("resnet18"), weights="random").module
    session = _session(path)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 224, 224)
        (logits,) = session.run(None, {"input": x.numpy()})
        assert logits.shape == (batch, 1000)
        with torch.inference_mode():
            np.testing.assert_allclose(logits, reference(x).numpy(), atol=1e-4, rtol=0)


def test_onnx_weights_are_embedded_in_one_file(resnet18_repository: Path) -> None:
    folder = resnet18_repository / "resnet18" / "1"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["golden", "model.onnx", "model.pt", "version.json"]  # no external data
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_cifar_checkpoint_export_with_parity_on_real_images(
    tmp_path: Path,
    run_cli: Cli,
    cifar_checkpoint: Path,
    cifar_sample_dir: Path,
    cifar_labelled_images: list[tuple[Path, int]],
) -> None:
    code, out, err = run_cli(
        "export", "resnet20", "--checkpoint", str(cifar_checkpoint),
        "--format", "onnx", "--format", "torchscript",
        "--parity-images", str(cifar_sample_dir), "--repository", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "exported resnet20 version 1" in out
    assert f"checkpoint: {cifar_checkpoint.name}" in out
    version = load_model(tmp_path / "resnet20").default_version.info
    assert version.weights.sha256 == sha256_file(cifar_checkpoint)
    images = len(cifar_labelled_images)
    for fmt in ("onnx", "torchscript"):
        report = version.parity[fmt]
        assert f"{fmt:<11} max |logit diff|" in out
        assert report.inputs == sum(parity.RANDOM_BATCH_SIZES) + images
        assert f"images ({images} from {cifar_sample_dir.name})" in report.input_source
        assert report.max_abs_logit_diff < 1e-3
    # The artifact itself classifies as well as the eager model does.
    config = load_model(tmp_path / "resnet20").config
    batch = torch.stack([load_image(p, config.preprocessing) for p, _ in cifar_labelled_images])
    (logits,) = _session(tmp_path / "resnet20" / "1" / "model.onnx").run(
        None, {"input": batch.numpy()}
    )
    truth = np.array([label for _, label in cifar_labelled_images])
    assert (logits.argmax(axis=1) == truth).mean() >= 0.70


def test_wrong_checkpoint_fails_and_writes_nothing(tmp_path: Path, run_cli: Cli) -> None:
    checkpoint = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, checkpoint)
    repository = tmp_path / "models"
    code, _, err = run_cli(
        "export", "resnet20", "--checkpoint", str(checkpoint), "--repository", str(repository)
    )
    assert code == 1
    assert "missing keys: conv1.weight" in err
    assert "unexpected keys: conv.weight" in err
    assert not (repository / "resnet20").exists()


def test_uncached_default_weights_fail_without_fallback(tmp_path: Path, run_cli: Cli) -> None:
    repository = tmp_path / "models"
    code, _, err = run_cli("export", "resnet18", "--repository", str(repository))
    assert code == 1
    assert "not in the torch hub cache" in err
    assert not repository.exists()


def test_random_fallback_exports_and_records_random(tmp_path: Path, run_cli: Cli) -> None:
    code, out, _ = run_cli(
        "export", "resnet20", "--weights", "DEFAULT", "--allow-random-fallback",
        "--repository", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    assert "WARNING: random (untrained) weights" in out
    info = json.loads((tmp_path / "resnet20" / "1" / "version.json").read_text())
    assert info["weights"] == {"origin": "random"}


def test_labels_file_gives_a_classifier_with_that_many_outputs(
    tmp_path: Path, run_cli: Cli
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n", encoding="utf-8")
    repository = tmp_path / "models"
    code, _, err = run_cli(
        "export", "resnet20", "--weights", "random", "--labels", str(labels),
        "--name", "colours", "--repository", str(repository),
    )  # fmt: skip
    assert code == 0, err
    entry = load_model(repository / "colours")
    assert entry.config.labels == ("red", "green", "blue")
    assert entry.config.architecture == "resnet20"
    session = _session(entry.default_version.artifact_path("onnx"))
    (logits,) = session.run(None, {"input": np.zeros((4, 3, 32, 32), dtype=np.float32)})
    assert logits.shape == (4, 3)


def test_second_export_becomes_version_2(tmp_path: Path, run_cli: Cli) -> None:
    for _ in range(2):
        code, _, err = run_cli(
            "export", "resnet20", "--weights", "random", "--repository", str(tmp_path)
        )
        assert code == 0, err
    entry = load_model(tmp_path / "resnet20")
    assert [v.info.version for v in entry.versions] == [1, 2]


def test_incompatible_export_under_the_same_name_is_refused(tmp_path: Path, run_cli: Cli) -> None:
    args = ("--weights", "random", "--name", "shared-name", "--repository", str(tmp_path))
    assert run_cli("export", "resnet20", *args)[0] == 0
    config_before = (tmp_path / "shared-name" / "config.json").read_bytes()
    code, _, err = run_cli("export", "resnet32", *args)
    assert code == 1
    assert "describes a different model" in err
    assert "architecture: existing 'resnet20' vs new 'resnet32'" in err
    assert sorted(p.name for p in (tmp_path / "shared-name").iterdir()) == ["1", "config.json"]
    assert (tmp_path / "shared-name" / "config.json").read_bytes() == config_before


def test_parity_failure_exits_non_zero_and_writes_nothing(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken artifact (simulated: ONNX logits off by 0.01) never becomes a version."""
    real_runner = parity.RUNNERS["onnx"]

    def off_by_a_bit(path: Path) -> parity.Runner:
        run = real_runner(path)
        return lambda batch: run(batch) + np.float32(0.01)

    monkeypatch.setitem(parity.RUNNERS, "onnx", off_by_a_bit)
    code, _, err = run_cli(
        "export", "resnet20", "--weights", "random", "--format", "onnx",
        "--format", "torchscript", "--repository", str(tmp_path / "models"),
    )  # fmt: skip
    assert code == 1
    assert "differs from PyTorch eager; nothing was written" in err
    assert "onnx        max |logit diff| 1.00e-02" in err
    assert "torchscript" not in err  # only the failing format is named
    assert list((tmp_path / "models").iterdir()) == []  # no model, no staging folder


def test_parity_bound_flag_is_applied(tmp_path: Path, run_cli: Cli) -> None:
    code, _, err = run_cli(
        "export", "resnet20", "--weights", "random", "--parity-bound", "1e-12",
        "--repository", str(tmp_path),
    )  # fmt: skip
    assert code == 1, "fp32 ONNX Runtime logits equal eager to 1e-12?"
    assert "(bound 1e-12)" in err


def test_list_shows_the_zoo(run_cli: Cli) -> None:
    code, out, _ = run_cli("export", "--list")
    assert code == 0
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()[2:]}
    assert len(rows) == 16
    assert "11.69 M" in rows["resnet18"]
    assert "IMAGENET1K_V2 (DEFAULT)" in rows["resnet50"]
    assert "0.27 M" in rows["resnet20"]
    assert "3x32x32" in rows["resnet20"]


def test_unknown_architecture_is_a_clear_error(tmp_path: Path, run_cli: Cli) -> None:
    code, _, err = run_cli("export", "resnet19", "--repository", str(tmp_path))
    assert code == 1
    assert "unknown architecture 'resnet19'" in err
