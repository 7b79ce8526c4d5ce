"""``resnet-serve import``: a plain ONNX classifier into the repository, checked, no torch.

The ONNX files are built with the ``onnx`` helper API: a 3-class "colour" classifier
(global average pool, then identity weights), so a red image must come out "red".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.cli import main
from service.repository import scan_repository, sha256_file
from tests.fakes import png

onnx = pytest.importorskip("onnx")
REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = ("red", "green", "blue")
SIZE = 8


def colour_classifier(path: Path, *, batch: int | str = "N", channels: int = 3) -> Path:
    """[batch,channels,8,8] float -> [batch,3]: the mean of each channel is its logit."""
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, SIZE, SIZE])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])
    weight = numpy_helper.from_array(np.eye(channels, 3, dtype=np.float32), "weight")
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "colour", [image], [logits], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the `cpu` extra allows
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def import_args(model: Path, repository: Path, *extra: str) -> list[str]:
    return ["import", str(model), "--name", "colours", "--repository", str(repository), *extra]


def test_import_writes_a_checked_version_with_checksum_and_origin(
    tmp_path: Path, labels_file: Path
) -> None:
    model = colour_classifier(tmp_path / "colours.onnx")
    repository = tmp_path / "models"
    args = import_args(model, repository, "--labels", str(labels_file), "--mean", "0.5,0.5,0.5")
    assert main(args) == 0
    assert main(args) == 0  # a second import is version 2 of the same model
    (entry,) = scan_repository(repository)  # verifies the artifact checksums too
    assert entry.config.labels == LABELS and entry.config.engine == "onnxruntime"
    assert entry.config.preprocessing.crop_size == SIZE  # taken from the model
    assert entry.config.preprocessing.mean == (0.5, 0.5, 0.5)
    assert entry.config.max_batch_size is None  # batches of any size run
    assert [v.info.version for v in entry.versions] == [1, 2]
    weights = entry.versions[0].info.weights
    assert weights.origin == "checkpoint" and weights.checkpoint == "colours.onnx"
    assert weights.sha256 == sha256_file(model)
    artifact = entry.versions[0].artifact_path("onnx")
    assert sha256_file(artifact) == sha256_file(model)


def test_import_records_the_golden_set_its_engine_answered(
    tmp_path: Path, labels_file: Path
) -> None:
    from service.preprocess import Limits, Preprocessor

    model = colour_classifier(tmp_path / "colours.onnx")
    repository = tmp_path / "models"
    assert main(import_args(model, repository, "--labels", str(labels_file))) == 0
    (entry,) = scan_repository(repository)
    version = entry.versions[0]
    golden = version.info.golden
    assert golden is not None and golden.precision == "fp32" and set(golden.logits) == {"onnx"}
    assert "CPUExecutionProvider" in golden.recorded_by
    # This classifier's logits are its input's channel means: the recorded rows must be
    # exactly that, for each golden image preprocessed the served way.
    preprocess = Preprocessor(entry.config.preprocessing, Limits(max_pixels=1 << 30))
    for item, row in zip(golden.inputs, golden.logits["onnx"], strict=True):
        tensor = preprocess((version.path / item.file).read_bytes())
        np.testing.assert_allclose(row, tensor.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_missing_labels_become_class_names_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = colour_classifier(tmp_path / "colours.onnx")
    assert main(import_args(model, tmp_path / "models")) == 0
    (entry,) = scan_repository(tmp_path / "models")
    assert entry.config.labels == ("class_0", "class_1", "class_2")
    assert any("no --labels" in r.getMessage() for r in caplog.records)


def test_fixed_batch_of_one_is_served_one_image_at_a_time(tmp_path: Path) -> None:
    model = colour_classifier(tmp_path / "colours.onnx", batch=1)
    assert main(import_args(model, tmp_path / "models")) == 0
    (entry,) = scan_repository(tmp_path / "models")
    assert entry.config.max_batch_size == 1


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: colour_classifier(p, channels=1), (), "needed: float32 [N,3,H,W]"),
        (colour_classifier, ("--crop", "16"), "takes 8x8 images but --crop is 16"),
        (colour_classifier, ("--labels", "TWO"), "has 2 labels but"),
        (lambda p: (p.write_bytes(b"not onnx"), p)[1], (), "ONNX Runtime cannot load it"),
        (colour_classifier, ("--mean", "1,2"), None),  # argparse: exit 2 with usage
    ],
)
def test_unservable_model_is_refused_in_one_line_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, extra, message
) -> None:
    model = make(tmp_path / "model.onnx")
    two = tmp_path / "two.txt"
    two.write_text("a\nb\n")
    args = [str(two) if a == "TWO" else a for a in extra]
    if message is None:
        with pytest.raises(SystemExit) as exit_info:
            main(import_args(model, tmp_path / "models", *args))
        assert exit_info.value.code == 2
        return
    assert main(import_args(model, tmp_path / "models", *args)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("resnet-serve import:") and message in line, line
    assert not (tmp_path / "models" / "colours").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serving_only_install_imports_and_serves_without_torch(
    tmp_path: Path, labels_file: Path
) -> None:
    """``pip install .[cpu]`` in a fresh venv: no torch, import a model, classify over HTTP."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "service"):
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(
                REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif (REPO_ROOT / name).exists():
            shutil.copy(REPO_ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, cli = venv / "bin" / "python", venv / "bin" / "resnet-serve"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", f"{source}[cpu]"],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )

    def probe(code: str) -> int:
        return subprocess.run(
            [python, "-c", code], cwd=tmp_path, timeout=60, capture_output=True
        ).returncode

    assert probe("import torch") != 0, "torch must not come with the serving install"
    assert probe("import benchmarks") != 0, "the wheel ships only the service package"
    export = subprocess.run(
        [cli, "export", "resnet18", "--weights", "random"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert export.returncode == 2 and "pip install '.[export]'" in export.stderr, export.stderr

    model = colour_classifier(tmp_path / "colours.onnx")
    repository = tmp_path / "models"
    imported = subprocess.run(
        [
            cli,
            *import_args(
                model,
                repository,
                "--labels",
                str(labels_file),
                "--mean",
                "0.5,0.5,0.5",
                "--std",
                "0.25,0.25,0.25",
            ),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr

    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RESNET_SERVE_REPOSITORY": str(repository),
        "RESNET_SERVE_PORT": str(port),
        "RESNET_SERVE_DECODE_THREADS": "1",
    }
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [cli, "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        red = png((255, 0, 0), (32, 32))
        response = httpx.post(f"{url}/classify", files=[("file", ("red.png", red))], timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "colours" and body["weights"].startswith("checkpoint: colours.onnx")
        assert body["results"][0]["predictions"][0]["label"] == "red", json.dumps(body)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        log.close()
