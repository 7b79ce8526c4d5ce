"""TorchScriptEngine: same logits as PyTorch eager, on every device it supports."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from service.engines.base import Engine
from service.engines.torchscript import TorchScriptEngine, choose_device
from service.export import cifar_resnet
from service.export.torchscript_export import export_torchscript

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none here"
)


@pytest.fixture(scope="module")
def eager() -> torch.nn.Module:
    """A CIFAR ResNet-20 with non-trivial BatchNorm statistics (freezing folds them)."""
    torch.manual_seed(0)
    model = cifar_resnet.resnet20()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def artifact(eager: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_torchscript(eager, tmp_path_factory.mktemp("ts") / "model.pt", input_size=32)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _batch(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, 3, 32, 32), dtype=np.float32)


def _reference(eager: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return eager(torch.from_numpy(batch)).numpy()


def test_engine_implements_the_protocol(artifact: Path) -> None:
    engine = TorchScriptEngine(artifact, device="cpu")
    assert isinstance(engine, Engine)
    assert (engine.name, engine.provider) == ("torchscript", "cpu")
    engine.close()


@pytest.mark.parametrize("size", [1, 2, 7])
def test_cpu_logits_match_eager(artifact: Path, eager: torch.nn.Module, size: int) -> None:
    engine = TorchScriptEngine(artifact, device="cpu")
    batch = _batch(size, seed=size)
    logits = engine.run(batch)
    assert logits.dtype == np.float32
    assert logits.shape == (size, 10)
    np.testing.assert_allclose(logits, _reference(eager, batch), atol=1e-4, rtol=0)


def test_warmup_runs_every_batch_size(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = TorchScriptEngine(artifact, device="cpu")
    seen: list[tuple[int, ...]] = []
    real_run = engine.run

    def spy(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return real_run(batch)

    monkeypatch.setattr(engine, "run", spy)
    engine.warmup(4)  # powers of two up to the limit, each twice (profile, then optimise)
    assert sorted(seen) == [(n, 3, 32, 32) for n in (1, 1, 2, 2, 4, 4)]


def test_non_contiguous_and_float64_input_is_accepted(
    artifact: Path, eager: torch.nn.Module
) -> None:
    batch = _batch(3)
    engine = TorchScriptEngine(artifact, device="cpu")
    logits = engine.run(np.asfortranarray(batch.astype(np.float64)))
    np.testing.assert_allclose(logits, _reference(eager, batch), atol=1e-4, rtol=0)


def test_threads_sets_the_torch_pool(artifact: Path, restore_threads: None) -> None:
    TorchScriptEngine(artifact, device="cpu", threads=1)
    assert torch.get_num_threads() == 1


def test_fp16_on_cpu_warns_and_runs_fp32(
    artifact: Path, eager: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        engine = TorchScriptEngine(artifact, device="cpu", fp16=True)
    assert "fp16 asked for on cpu; running fp32" in caplog.text
    assert engine.fp16 is False
    batch = _batch(2)
    np.testing.assert_allclose(engine.run(batch), _reference(eager, batch), atol=1e-4, rtol=0)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda"):
        choose_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_without_a_gpu_is_an_error(artifact: Path) -> None:
    assert choose_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        TorchScriptEngine(artifact, device="cuda")


@pytest.mark.gpu
@needs_cuda
def test_cuda_logits_match_eager(artifact: Path, eager: torch.nn.Module) -> None:
    engine = TorchScriptEngine(artifact, device="auto")
    assert engine.provider == "cuda:0"
    batch = _batch(5)
    # cuDNN picks other convolution algorithms than the CPU: allow a little more.
    np.testing.assert_allclose(engine.run(batch), _reference(eager, batch), atol=1e-3, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_is_close_to_eager_and_returns_fp32(
    artifact: Path, eager: torch.nn.Module
) -> None:
    engine = TorchScriptEngine(artifact, device="cuda", fp16=True)
    assert engine.fp16 is True
    batch = _batch(8)
    logits = engine.run(batch)
    reference = _reference(eager, batch)
    assert logits.dtype == np.float32
    # fp16 keeps ~3 significant digits; the ranking must survive.
    np.testing.assert_allclose(logits, reference, atol=5e-2, rtol=1e-2)
    assert (logits.argmax(axis=1) == reference.argmax(axis=1)).all()
