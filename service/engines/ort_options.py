"""ONNX Runtime provider options and fixed batch sizes, as pure functions.

Kept apart from the engine so that what a GPU session is asked for can be checked on a
machine without a GPU: the TensorRT optimisation profile and caches, CUDA graphs, and the
padding of a batch to the few sizes a captured CUDA graph (or a warm-up) covers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Providers whose tensors live in GPU memory: their outputs are bound on the device.
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})


def fixed_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two up to the limit, and the limit itself.

    The sizes the pool warms up (ONNX Runtime plans memory per shape seen; TensorRT and
    CUDA pick kernels per shape) and, with CUDA graphs on, the only sizes ever run: a
    batch is padded up to the next one, so at most log2(max) + 1 graphs are captured.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


def padded_size(count: int, sizes: tuple[int, ...]) -> int:
    """The smallest allowed size that holds ``count`` images."""
    for size in sorted(sizes):
        if size >= count:
            return size
    raise ValueError(f"a batch of {count} is larger than the largest fixed size {max(sizes)}")


def pad_batch(
    batch: npt.NDArray[np.float32], sizes: tuple[int, ...]
) -> tuple[npt.NDArray[np.float32], int]:
    """``batch`` (n, ...) zero-padded to the next allowed size, and n to slice logits back.

    Zeros are a valid input (a black, normalised image): the padded rows are computed
    and thrown away, never returned. An exact fit is returned as is, without a copy.
    """
    count = int(batch.shape[0])
    if count < 1:
        raise ValueError("an empty batch cannot be padded")
    size = padded_size(count, sizes)
    if size == count:
        return batch, count
    padded = np.zeros((size, *batch.shape[1:]), dtype=batch.dtype)
    padded[:count] = batch
    return padded, count


def shape_text(name: str, batch: int, item_shape: tuple[int, ...]) -> str:
    """TensorRT's profile syntax: ``input:8x3x224x224``."""
    return f"{name}:{'x'.join(str(d) for d in (batch, *item_shape))}"


def tensorrt_options(
    *,
    input_name: str,
    item_shape: tuple[int, ...],
    max_batch_size: int,
    fp16: bool,
    cache_dir: Path,
    cuda_graphs: bool = False,
) -> dict[str, str]:
    """TensorRT EP options: one optimisation profile for the dynamic batch axis, caches.

    The profile covers 1..max_batch_size (optimised for the largest, where a GPU earns its
    throughput), so a batch size not seen before never triggers an engine rebuild. The
    engine and timing caches persist under ``cache_dir``: the first start builds for
    minutes, later starts load in seconds (the cache is keyed by model, GPU and TensorRT
    version, so a changed model or driver rebuilds by itself).
    """
    return {
        "trt_profile_min_shapes": shape_text(input_name, 1, item_shape),
        "trt_profile_opt_shapes": shape_text(input_name, max_batch_size, item_shape),
        "trt_profile_max_shapes": shape_text(input_name, max_batch_size, item_shape),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": str(bool(fp16)),
        "trt_cuda_graph_enable": str(bool(cuda_graphs)),
    }


def cuda_options(*, cuda_graphs: bool) -> dict[str, str]:
    """CUDA EP options. Graph capture needs fixed input and output addresses and shapes:
    the engine then runs only padded fixed sizes from pre-allocated device buffers."""
    return {"enable_cuda_graph": "1"} if cuda_graphs else {}


def provider_options(
    providers: list[str],
    *,
    input_name: str,
    item_shape: tuple[int, ...],
    max_batch_size: int,
    fp16: bool,
    cache_dir: Path,
    cuda_graphs: bool,
) -> list[dict[str, str]]:
    """One options dict per provider, in the order given (CPU needs none)."""
    options: list[dict[str, str]] = []
    for provider in providers:
        if provider == TENSORRT:
            options.append(
                tensorrt_options(
                    input_name=input_name,
                    item_shape=item_shape,
                    max_batch_size=max_batch_size,
                    fp16=fp16,
                    cache_dir=cache_dir,
                    cuda_graphs=cuda_graphs,
                )
            )
        elif provider == CUDA:
            options.append(cuda_options(cuda_graphs=cuda_graphs))
        else:
            options.append({})
    return options
