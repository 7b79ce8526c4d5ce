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
    engine.warmup(max(engine.sizes))
    assert seen == [1, 1, 2, 2, 4, 4, 8, 8]


# -- on a GPU with onnxruntime-gpu --------------------------------------------------------
AVAILABLE = ort.get_available_providers()
needs_ort_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in AVAILABLE,
    reason=f"needs onnxruntime-gpu with CUDA; this onnxruntime offers {AVAILABLE}",
)
needs_ort_tensorrt = pytest.mark.skipif(
    "TensorrtExecutionProvider" not in AVAILABLE,
    reason=f"needs onnxruntime-gpu with TensorRT; this onnxruntime offers {AVAILABLE}",
)


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["bound", "graphs"])
def test_cuda_runs_equal_a_cpu_run(
    artifact: Path, plain: ort.InferenceSession, cuda_graphs: bool
) -> None:
    engine = OnnxRuntimeEngine(
        artifact, providers=("CUDAExecutionProvider",), max_batch_size=8, cuda_graphs=cuda_graphs
    )
    assert engine.device_type == "cuda"
    engine.warmup(max(engine.sizes))
    for size in (1, 3, 8, 3):  # 3 twice: a replayed graph answers the new batch
        batch = _batch(size) + size
        np.testing.assert_allclose(engine.run(batch), _reference(plain, batch), atol=1e-3)


@pytest.mark.gpu
@needs_ort_cuda
def test_a_cuda_torch_tensor_is_bound_on_the_device(
    artifact: Path, plain: ort.InferenceSession
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    engine = OnnxRuntimeEngine(artifact, providers=("CUDAExecutionProvider",), max_batch_size=8)
    batch = _batch(4)
    logits = engine.run(torch.from_numpy(batch).cuda())  # type: ignore[arg-type]
    np.testing.assert_allclose(logits, _reference(plain, batch), atol=1e-3)


@pytest.mark.gpu
@needs_ort_tensorrt
def test_tensorrt_builds_its_profile_once_and_caches_it(
    artifact: Path, plain: ort.InferenceSession, tmp_path: Path
) -> None:
    engine = OnnxRuntimeEngine(
        artifact,
        providers=("TensorrtExecutionProvider",),
        max_batch_size=8,
        fp16=True,
        trt_cache_dir=tmp_path,
    )
    assert engine.provider == "TensorrtExecutionProvider"
    engine.warmup(max(engine.sizes))
    assert any(tmp_path.iterdir())  # engine and timing caches persisted
    batch = _batch(5)  # not a warm-up size: inside the profile, no rebuild
    np.testing.assert_allclose(engine.run(batch), _reference(plain, batch), atol=5e-2, rtol=5e-2)
