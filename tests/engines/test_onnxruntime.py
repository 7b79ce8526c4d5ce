"""Execution-provider choice of the ONNX Runtime engine (service/engines/onnxruntime.py)."""

from __future__ import annotations

import pytest

from service.engines.onnxruntime import choose_providers

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


def test_auto_prefers_tensorrt_then_cuda_then_cpu() -> None:
    assert choose_providers(None, [CPU, CUDA, TRT]) == [TRT, CUDA, CPU]
    assert choose_providers(None, [CPU, CUDA]) == [CUDA, CPU]
    assert choose_providers(None, [CPU]) == [CPU]


def test_device_cpu_never_picks_a_gpu() -> None:
    assert choose_providers(None, [CPU, CUDA, TRT], device="cpu") == [CPU]


def test_explicit_providers_keep_their_order_and_end_with_cpu() -> None:
    assert choose_providers((CUDA,), [CPU, CUDA, TRT]) == [CUDA, CPU]
    assert choose_providers((CPU, CUDA), [CPU, CUDA]) == [CPU, CUDA]


def test_a_missing_wanted_provider_is_an_error_not_a_silent_cpu() -> None:
    with pytest.raises(RuntimeError, match="TensorrtExecutionProvider"):
        choose_providers((TRT,), [CPU])


def test_device_cuda_without_a_gpu_provider_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="cuda"):
        choose_providers(None, [CPU], device="cuda")
