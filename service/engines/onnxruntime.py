"""ONNX Runtime engine: the default, fastest on CPU, TensorRT/CUDA on a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from service.engines.base import Batch, Logits

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


class OnnxRuntimeEngine:
    """One InferenceSession; ``run`` releases the GIL inside ONNX Runtime."""

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
        chosen = choose_providers(providers, ort.get_available_providers(), device=device)
        provider_options: list[dict[str, str]] = []
        for provider in chosen:
            if provider == "TensorrtExecutionProvider":
                cache = trt_cache_dir or artifact.parent / ".trt-cache"
                cache.mkdir(parents=True, exist_ok=True)
                provider_options.append(
                    {
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(cache),
                        "trt_fp16_enable": str(bool(fp16)),
                    }
                )
            else:
                provider_options.append({})
        self._session = ort.InferenceSession(
            str(artifact),
            sess_options=options,
            providers=chosen,
            provider_options=provider_options,
        )
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        self.provider = self._session.get_providers()[0]
        if self.provider != chosen[0]:
            logger.warning("%s: asked for %s, running on %s", artifact, chosen[0], self.provider)

    def run(self, batch: Batch) -> Logits:
        (logits,) = self._session.run([self._output], {self._input: batch})
        return np.asarray(logits, dtype=np.float32)

    def warmup(self, batch_sizes: tuple[int, ...]) -> None:
        shape = [d if isinstance(d, int) else 1 for d in self._session.get_inputs()[0].shape]
        for size in batch_sizes:
            self.run(np.zeros((size, *shape[1:]), dtype=np.float32))

    def close(self) -> None:
        del self._session
