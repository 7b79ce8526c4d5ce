"""The ONNX Runtime engine's IO-binding paths, run on CPU: the GPU's code path, CPU memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.engines.onnxruntime import OnnxRuntimeEngine
from tests.conftest import export


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("binding")
    export(repository, "resnet20", "--weights", "random")
    return repository / "resnet20" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def plain(artifact: Path) -> ort.InferenceSession:
    """A bare session.run, the reference the bound paths must equal."""
    return ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])


def _batch(size: int) -> np.ndarray:
    return np.random.default_rng(size).standard_normal((size, 3, 32, 32)).astype(np.float32)


def _reference(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch})
    return np.asarray(logits)


@pytest.mark.parametrize("size", [1, 3, 8])
def test_io_binding_equals_a_plain_run(
    artifact: Path, plain: ort.InferenceSession, size: int
) -> None:
    engine = OnnxRuntimeEngine(artifact, device="cpu", max_batch_size=8)
    batch = _batch(size)
    logits = engine.run(batch)
    assert logits.dtype == np.float32 and logits.shape == (size, 10)
    np.testing.assert_allclose(logits, _reference(plain, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [1, 3, 5, 8])
def test_padded_fixed_buffers_return_only_the_real_rows(
    artifact: Path, plain: ort.InferenceSession, size: int
) -> None:
    engine = OnnxRuntimeEngine(artifact, device="cpu", max_batch_size=8, cuda_graphs=True)
    assert engine.sizes == (1, 2, 4, 8)
    batch = _batch(size)
    logits = engine.run(batch)
    assert logits.shape == (size, 10)
    np.testing.assert_allclose(logits, _reference(plain, batch), rtol=1e-5, atol=1e-5)
    # The same size again reuses its buffers and still answers this batch, not the last.
    other = _batch(size) + 1.0
    np.testing.assert_allclose(engine.run(other), _reference(plain, other), rtol=1e-5, atol=1e-5)


def test_fixed_buffers_refuse_a_batch_above_the_limit(artifact: Path) -> None:
    engine = OnnxRuntimeEngine(artifact, device="cpu", max_batch_size=4, cuda_graphs=True)
    with pytest.raises(ValueError, match="larger than the largest"):
        engine.run(_batch(5))


def test_a_torch_tensor_is_bound_where_it_lies(artifact: Path, plain: ort.InferenceSession) -> None:
    torch = pytest.importorskip("torch")
    engine = OnnxRuntimeEngine(artifact, device="cpu", max_batch_size=8)
    batch = _batch(4)
    logits = engine.run(torch.from_numpy(batch))  # type: ignore[arg-type]
    np.testing.assert_allclose(logits, _reference(plain, batch), rtol=1e-5, atol=1e-5)


def test_warmup_runs_every_fixed_size(artifact: Path) -> None:
    engine = OnnxRuntimeEngine(artifact, device="cpu", max_batch_size=8, cuda_graphs=True)
    seen: list[int] = []
    run = engine.run
    engine.run = lambda batch: seen.append(len(batch)) or run(batch)  # type: ignore[method-assign]
    engine.warmup(engine.sizes)
    assert seen == [1, 1, 2, 2, 4, 4, 8, 8]
