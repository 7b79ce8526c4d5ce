"""GPU session options and fixed batch sizes (service/engines/ort_options.py), on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engines.ort_options import (
    CPU,
    CUDA,
    TENSORRT,
    cuda_options,
    fixed_batch_sizes,
    pad_batch,
    padded_size,
    provider_options,
    tensorrt_options,
)
from service.served import warmup_sizes as _warmup_sizes


def test_fixed_sizes_are_powers_of_two_then_the_limit() -> None:
    assert fixed_batch_sizes(1) == (1,)
    assert fixed_batch_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert fixed_batch_sizes(24) == (1, 2, 4, 8, 16, 24)


def test_the_pool_warms_up_exactly_the_graph_sizes() -> None:
    assert _warmup_sizes(24) == fixed_batch_sizes(24)


def test_fixed_sizes_refuse_a_zero_limit() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        fixed_batch_sizes(0)


@pytest.mark.parametrize(("count", "size"), [(1, 1), (3, 4), (4, 4), (17, 24), (24, 24)])
def test_a_batch_is_padded_to_the_next_fixed_size(count: int, size: int) -> None:
    assert padded_size(count, fixed_batch_sizes(24)) == size


def test_a_batch_above_the_largest_size_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than the largest"):
        padded_size(33, fixed_batch_sizes(32))


def test_padding_keeps_the_rows_and_fills_zeros() -> None:
    batch = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    padded, count = pad_batch(batch, fixed_batch_sizes(8))
    assert padded.shape == (8, 3, 4, 4) and padded.dtype == np.float32 and count == 5
    np.testing.assert_array_equal(padded[:5], batch)
    assert not padded[5:].any()


def test_an_exact_fit_is_not_copied() -> None:
    batch = np.ones((4, 3, 2, 2), dtype=np.float32)
    padded, count = pad_batch(batch, fixed_batch_sizes(8))
    assert padded is batch and count == 4


def test_tensorrt_profile_covers_the_dynamic_batch_axis_up_to_the_limit(tmp_path: Path) -> None:
    options = tensorrt_options(
        input_name="input",
        item_shape=(3, 224, 224),
        max_batch_size=32,
        fp16=True,
        cache_dir=tmp_path,
    )
    assert options["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert options["trt_profile_opt_shapes"] == "input:32x3x224x224"
    assert options["trt_profile_max_shapes"] == "input:32x3x224x224"
    assert options["trt_fp16_enable"] == "True"
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_timing_cache_enable"] == "True"
    assert options["trt_timing_cache_path"] == str(tmp_path)
    assert options["trt_cuda_graph_enable"] == "False"


def test_tensorrt_fp16_follows_the_model_config(tmp_path: Path) -> None:
    options = tensorrt_options(
        input_name="x", item_shape=(3, 32, 32), max_batch_size=8, fp16=False, cache_dir=tmp_path
    )
    assert options["trt_fp16_enable"] == "False"
    assert options["trt_profile_max_shapes"] == "x:8x3x32x32"


def test_cuda_graphs_only_when_asked() -> None:
    assert cuda_options(cuda_graphs=False) == {}
    assert cuda_options(cuda_graphs=True) == {"enable_cuda_graph": "1"}


def test_provider_options_line_up_with_the_providers(tmp_path: Path) -> None:
    options = provider_options(
        [TENSORRT, CUDA, CPU],
        input_name="input",
        item_shape=(3, 224, 224),
        max_batch_size=16,
        fp16=True,
        cache_dir=tmp_path,
        cuda_graphs=True,
    )
    assert len(options) == 3
    assert options[0]["trt_profile_max_shapes"] == "input:16x3x224x224"
    assert options[0]["trt_cuda_graph_enable"] == "True"
    assert options[1] == {"enable_cuda_graph": "1"}
    assert options[2] == {}
