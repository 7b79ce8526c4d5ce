"""The correctness gate on real exports: what it refuses, with which reason, and what passes.

Each test edits a private copy of the session's CIFAR ResNet-20 export (ONNX and
TorchScript, golden set recorded by the export) the way an accident would, then loads
it through the pool with the real engines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ModelLoadFailed
from service.gate import compare, golden_images
from service.golden import Bound
from service.metrics import Metrics
from service.pool import ModelPool
from service.readiness import Readiness
from service.repository import Preprocessing, scan_repository, sha256_file
from service.settings import Settings

MODEL = "resnet20"


@pytest.fixture
def repository(cifar_repository: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cifar_repository, tmp_path / "models"))


def make_pool(root: Path, **overrides: Any) -> ModelPool:
    settings = Settings(
        repository=root,
        model_control_mode="explicit",
        admin_api_key="admin",
        warmup=False,
        intra_op_threads=1,
        grpc_port=0,
        **overrides,
    )
    return ModelPool(scan_repository(root), settings, Metrics())


def loaded(root: Path, **overrides: Any) -> ModelPool:
    pool = make_pool(root, **overrides)
    asyncio.run(pool.load())
    return pool


def edit_json(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def reload_refused(pool: ModelPool) -> str:
    async def scenario() -> str:
        with pytest.raises(ModelLoadFailed) as err:
            await pool.load_model(MODEL)
        await pool.stop(1)
        return err.value.message

    return asyncio.run(scenario())


def test_a_good_export_passes_its_gate_on_both_engines(repository: Path) -> None:
    for engine in ("onnxruntime", "torchscript"):
        pool = loaded(repository, engine=engine)
        (model,) = pool.all()
        assert (model.status, model.gate, model.engine_name) == ("ready", "passed", engine)
        outcome = pool.metrics.registry.get_sample_value(
            "resnet_serve_gate_outcome",
            {"model": MODEL, "version": "1", "resnet_serve_gate_outcome": "passed"},
        )
        assert outcome == 1
        asyncio.run(pool.stop(1))


def test_a_wrong_recipe_config_is_refused_at_start_up_and_strict_mode_sees_it(
    repository: Path,
) -> None:
    edit_json(
        repository / MODEL / "config.json",
        lambda c: c["preprocessing"].update(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]),
    )
    pool = loaded(repository)
    (model,) = pool.all()
    assert (model.status, model.gate) == ("failed", "refused")
    assert "refused by the correctness gate" in (model.error or "")
    assert not model.serving
    problems = Readiness(pool, pool.settings).startup_problems()
    assert "correctness gate" in problems[f"{MODEL}:1"]
    (state,) = pool.index()
    assert state.triton_state == "UNAVAILABLE" and "correctness gate" in state.reason


def test_a_wrong_recipe_reload_is_refused_and_the_version_serving_stays(
    repository: Path,
) -> None:
    pool = loaded(repository)
    edit_json(repository / MODEL / "config.json", lambda c: c["preprocessing"].update(crop_size=28))
    message = reload_refused(pool)
    assert "v1: refused by the correctness gate" in message
    (model,) = pool.all()
    assert model.entry.config.preprocessing.crop_size == 32  # the old instance served on


def test_other_weights_under_a_matching_checksum_are_refused(repository: Path) -> None:
    import onnx
    from onnx import numpy_helper

    pool = loaded(repository)
    artifact = repository / MODEL / "1" / "model.onnx"
    graph = onnx.load(str(artifact))
    weight = next(i for i in graph.graph.initializer if len(i.dims) == 4)
    array = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(array[::-1].copy(), weight.name))  # filters swapped
    onnx.save(graph, str(artifact))
    digest = sha256_file(artifact)  # published as if it were the real export
    edit_json(
        repository / MODEL / "1" / "version.json",
        lambda v: v["artifacts"]["onnx"].update(sha256=digest, bytes=artifact.stat().st_size),
    )
    message = reload_refused(pool)
    assert "refused by the correctness gate" in message
    assert "past the bound" in message or "top-1 class changed" in message


def test_a_truncated_artifact_is_refused_by_checksum_or_by_the_engine(repository: Path) -> None:
    pool = loaded(repository)
    artifact = repository / MODEL / "1" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    assert "does not match its sha256" in reload_refused(pool)
    # The same file published with its own checksum: the engine cannot open it.
    edit_json(
        repository / MODEL / "1" / "version.json",
        lambda v: v["artifacts"]["onnx"].update(
            sha256=sha256_file(artifact), bytes=artifact.stat().st_size
        ),
    )
    pool = loaded(repository)
    (model,) = pool.all()
    assert model.status == "failed" and model.gate == ""
    assert "onnx" in (model.error or "").lower() or "protobuf" in (model.error or "").lower()


def test_tampered_golden_logits_are_refused(repository: Path) -> None:
    def tamper(version: dict[str, Any]) -> None:
        rows = version["golden"]["logits"]["onnx"]
        rows[0] = [x + 0.5 for x in rows[0]]  # as if recorded from another model

    edit_json(repository / MODEL / "1" / "version.json", tamper)
    pool = loaded(repository)
    (model,) = pool.all()
    assert model.status == "failed"
    assert "past the bound" in (model.error or "")


def test_a_tampered_golden_image_is_refused_naming_it(repository: Path) -> None:
    (repository / MODEL / "1" / "golden" / "2.png").write_bytes(b"\x89PNG not the image")
    pool = loaded(repository)
    (model,) = pool.all()
    assert model.status == "failed"
    assert "golden image golden/2.png does not match its sha256" in (model.error or "")


def test_a_version_without_golden_set_loads_with_a_warning(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edit_json(repository / MODEL / "1" / "version.json", lambda v: v.pop("golden"))
    with caplog.at_level(logging.WARNING):
        pool = loaded(repository)
    (model,) = pool.all()
    assert (model.status, model.gate) == ("ready", "skipped")
    assert "has no golden set" in caplog.text
    asyncio.run(pool.stop(1))


# -- the comparison itself ------------------------------------------------------------
BOUND = Bound(rtol=1e-3, atol=1e-4)


def test_a_near_tie_may_flip_within_the_bound_but_a_clear_top1_may_not() -> None:
    reference = np.array([[1.0, 1.00005, -3.0]])
    assert compare(reference, np.array([[1.00005, 1.0, -3.0]]), BOUND).passed
    flipped = compare(reference, np.array([[1.0, 1.00005, 2.0]]), BOUND)
    assert not flipped.passed and "top-1 class changed" in flipped.reason


def test_non_finite_logits_and_another_shape_are_refused() -> None:
    reference = np.array([[1.0, 2.0]])
    assert "non-finite" in compare(reference, np.array([[np.nan, 2.0]]), BOUND).reason
    assert "shape" in compare(reference, np.array([[1.0, 2.0, 3.0]]), BOUND).reason


def test_golden_images_are_the_same_bytes_every_time_and_differ_from_each_other() -> None:
    spec = Preprocessing(resize_size=36, crop_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    first, second = golden_images(spec), golden_images(spec)
    assert first == second
    assert len(set(first)) == len(first) == 4
