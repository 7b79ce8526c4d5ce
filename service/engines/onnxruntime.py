"""ONNX Runtime engine: the default, fastest on CPU, TensorRT/CUDA on a GPU.

Every run goes through IO binding, on CPU as on a GPU, so the code path a GPU takes is
the one the CPU tests run: the batch is bound once (ONNX Runtime copies it to the device
once), the logits are bound on the provider's device and copied back once per batch. With
CUDA graphs on, the batch is padded to a fixed size and copied into that size's
pre-allocated input buffer, whose address the captured graph replays.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.engines.base import Batch, Logits
from service.engines.ort_options import (
    GPU_PROVIDERS,
    TENSORRT,
    fixed_batch_sizes,
    pad_batch,
    provider_options,
)

logger = logging.getLogger(__name__)

#: Preference order when the config names none: the first one available wins.
PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


def choose_providers(
    wanted: tuple[str, ...] | None, available: list[str], *, device: str = "auto"
) -> list[str]:
    """Providers to ask for, in order, always ending with CPU as the fallback.

    An explicitly wanted provider that this onnxruntime build lacks is an error (the
    user asked for a GPU and would silently get a CPU otherwise).
    """
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise RuntimeError(
                f"execution provider(s) {missing} are not available in this onnxruntime "
                f"build; available: {available}"
            )
        chosen = list(wanted)
    elif device == "cpu":
        chosen = ["CPUExecutionProvider"]
    else:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        if device == "cuda" and not any(p != "CPUExecutionProvider" for p in chosen):
            raise RuntimeError(f"device 'cuda' asked for, but onnxruntime offers only {available}")
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def is_torch_tensor(batch: object) -> bool:
    """A torch tensor (from GPU preprocessing), told apart without importing torch."""
    return type(batch).__module__.startswith("torch") and hasattr(batch, "data_ptr")


class OnnxRuntimeEngine:
    """One InferenceSession run through IO binding; ``run`` releases the GIL inside ORT."""

    name = "onnxruntime"

    def __init__(
        self,
        artifact: Path,
        *,
        providers: tuple[str, ...] | None = None,
        device: str = "auto",
        threads: int = 0,
        spinning: bool = True,
        fp16: bool = False,
        trt_cache_dir: Path | None = None,
        max_batch_size: int = 32,
        cuda_graphs: bool = False,
    ) -> None:
        import onnxruntime as ort  # serving extra; imported here so export needs none

        # No usage telemetry from a server (it also warns on a read-only filesystem).
        ort.disable_telemetry_events()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Batches already parallelise inside operators; inter-op threads only add
        # contention for a sequential CNN graph.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Spinning idle threads keep a core busy between operators and after each run;
        # in the server the decode threads need that core (docs/BENCHMARKS.md, tuning).
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        # Integer convolutions accumulate without saturating on x86 CPUs that lack VNNI
        # (AVX2 only: uint8 x int8 products summed in 16 bits clip). Measured on a Zen 2
        # (no VNNI), int8 ResNet-20 against fp32: top-1 agreement 90.67 % without it,
        # 98.00 % with it, the figure a VNNI Xeon gives. fp32 graphs have no such ops.
        options.add_session_config_entry("session.x64quantprecision", "1")
        chosen = choose_providers(providers, ort.get_available_providers(), device=device)
        cache = trt_cache_dir or artifact.parent / ".trt-cache"
        # TensorRT's profile names the input: read it first (the only case that pays).
        input_name = ""
        item_shape: tuple[int, ...] = ()
        if TENSORRT in chosen:
            probe = _probe_session(ort, artifact)
            input_name, item_shape = _input_signature(probe, artifact, fixed=True)
            cache.mkdir(parents=True, exist_ok=True)
            logger.info(
                "%s: building the TensorRT engine (profile batch 1..%d, fp16=%s) or loading "
                "it from %s; a first build takes minutes",
                artifact,
                max_batch_size,
                fp16,
                cache,
            )
        started = time.monotonic()
        self._session = ort.InferenceSession(
            str(artifact),
            sess_options=options,
            providers=chosen,
            provider_options=provider_options(
                chosen,
                input_name=input_name,
                item_shape=item_shape,
                max_batch_size=max_batch_size,
                fp16=fp16,
                cache_dir=cache,
                cuda_graphs=cuda_graphs,
            ),
        )
        self._input, self._item_shape = _input_signature(self._session, artifact, fixed=cuda_graphs)
        self._output = self._session.get_outputs()[0].name
        self.provider = self._session.get_providers()[0]
        if self.provider != chosen[0]:
            logger.warning("%s: asked for %s, running on %s", artifact, chosen[0], self.provider)
        if self.provider == TENSORRT:
            logger.info("%s: TensorRT session ready in %.1fs", artifact, time.monotonic() - started)
        #: Where inputs and outputs are bound: the provider's memory.
        self.device_type = "cuda" if self.provider in GPU_PROVIDERS else "cpu"
        self.cuda_graphs = cuda_graphs
        self.sizes = fixed_batch_sizes(max_batch_size)
        self._fixed: dict[int, tuple[Any, Any, Any]] = {}
        self._run_options: dict[int, Any] = {}
        if cuda_graphs:
            if self.device_type != "cuda":
                logger.warning(
                    "%s: cuda_graphs without a GPU provider: batches are padded to fixed "
                    "sizes, but no graph is captured on %s",
                    artifact,
                    self.provider,
                )
            self._allocate_fixed(ort)

    # -- running -----------------------------------------------------------------------
    def run(self, batch: Batch) -> Logits:
        """Logits (float32, host) of a float32 NCHW batch: a numpy array, or a torch
        tensor (GPU preprocessing) bound where it lies when that is the provider's memory."""
        if is_torch_tensor(batch):
            tensor: Any = batch
            where = "cuda" if tensor.is_cuda else "cpu"
            if where == self.device_type and not self.cuda_graphs:
                return self._run_bound_tensor(tensor)
            # Another memory than the session's, or fixed graph buffers: via the host.
            batch = tensor.detach().to("cpu").contiguous().numpy()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.cuda_graphs:
            return self._run_fixed(batch)
        binding = self._session.io_binding()
        binding.bind_cpu_input(self._input, batch)
        return self._run_binding(binding)

    def _run_bound_tensor(self, tensor: Any) -> Logits:
        """Bind a torch tensor's memory directly: no copy, no host round trip on a GPU."""
        import torch  # present: the caller holds a torch tensor

        tensor = tensor.to(dtype=torch.float32).contiguous()
        if tensor.is_cuda:
            # torch queued the work that fills it on its own stream; ONNX Runtime reads it
            # from another, so it must be finished first.
            torch.cuda.current_stream(tensor.device).synchronize()
        binding = self._session.io_binding()
        binding.bind_input(
            self._input,
            self.device_type,
            tensor.device.index or 0,
            np.float32,
            list(tensor.shape),
            tensor.data_ptr(),
        )
        return self._run_binding(binding)

    def _run_binding(self, binding: Any) -> Logits:
        binding.bind_output(self._output, self.device_type)
        self._session.run_with_iobinding(binding)
        (logits,) = binding.copy_outputs_to_cpu()
        return np.asarray(logits, dtype=np.float32)

    def _allocate_fixed(self, ort: Any) -> None:
        """One input and one output buffer per fixed size, bound once: CUDA graphs replay
        fixed addresses; each size is its own graph (``gpu_graph_id``)."""
        classes = self._session.get_outputs()[0].shape[-1]
        if not isinstance(classes, int):
            raise RuntimeError(f"cuda_graphs needs a fixed class count, the model has {classes}")
        for graph_id, size in enumerate(self.sizes, start=1):
            inputs = ort.OrtValue.ortvalue_from_shape_and_type(
                [size, *self._item_shape], np.float32, self.device_type, 0
            )
            outputs = ort.OrtValue.ortvalue_from_shape_and_type(
                [size, classes], np.float32, self.device_type, 0
            )
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(self._input, inputs)
            binding.bind_ortvalue_output(self._output, outputs)
            self._fixed[size] = (inputs, outputs, binding)
            run_options = ort.RunOptions()
            if self.device_type == "cuda":
                run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
            self._run_options[size] = run_options

    def _run_fixed(self, batch: npt.NDArray[np.float32]) -> Logits:
        padded, count = pad_batch(batch, self.sizes)
        inputs, outputs, binding = self._fixed[padded.shape[0]]
        inputs.update_inplace(padded)  # one host-to-device copy into the graph's buffer
        self._session.run_with_iobinding(binding, self._run_options[padded.shape[0]])
        return np.array(outputs.numpy()[:count], dtype=np.float32)

    def warmup(self, max_batch_size: int) -> None:
        """Powers of two up to the limit (:func:`fixed_batch_sizes`): ONNX Runtime plans
        memory per shape seen, TensorRT and CUDA pick kernels per shape, and with CUDA
        graphs these are the only sizes ever run, each twice, as ORT captures a graph on
        a size's second run."""
        repeats = 2 if self.cuda_graphs else 1
        for size in fixed_batch_sizes(max_batch_size):
            batch = np.zeros((size, *self._item_shape), dtype=np.float32)
            for _ in range(repeats):
                self.run(batch)

    def close(self) -> None:
        self._fixed.clear()
        del self._session


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as ONNX Runtime reads it (a dimension may be symbolic)."""

    name: str
    type: str
    shape: tuple[int | str | None, ...]


def graph_signature(artifact: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's (inputs, outputs), read with a bare CPU session: how tools that check
    an artifact (the importer) see it, through the one module that opens ONNX files."""
    import onnxruntime as ort

    session = _probe_session(ort, artifact)

    def specs(nodes: Any) -> list[TensorSpec]:
        return [TensorSpec(n.name, n.type, tuple(n.shape)) for n in nodes]

    return specs(session.get_inputs()), specs(session.get_outputs())


def _probe_session(ort: Any, artifact: Path) -> Any:
    """A bare CPU session, no optimisation: reads the graph's inputs before the real one.

    TensorRT's optimisation profile names the input and its shape in the provider
    options, which must be given when the real session is created.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        str(artifact), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _input_signature(session: Any, artifact: Path, *, fixed: bool) -> tuple[str, tuple[int, ...]]:
    """The first input's name and per-image shape (C, H, W).

    TensorRT profiles and CUDA graph buffers need every dimension but the batch fixed
    (``fixed``); otherwise a symbolic one is taken as 1, for warm-up only.
    """
    first = session.get_inputs()[0]
    dims = first.shape[1:]
    if fixed and not all(isinstance(d, int) for d in dims):
        raise RuntimeError(f"{artifact}: input {first.name} needs fixed C, H, W; has {dims}")
    return first.name, tuple(d if isinstance(d, int) else 1 for d in dims)
