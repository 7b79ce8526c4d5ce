"""The one contract every inference engine implements.

The batcher imports only this protocol, so engines are swappable and tests can use a
fake. Engines are called from one dedicated thread per model (see
:mod:`service.batching`), so implementations need not be thread-safe, but ``run`` must
release the GIL while computing (ONNX Runtime and PyTorch both do) so decoding in other
threads keeps going.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Batch = npt.NDArray[np.float32]
Logits = npt.NDArray[np.float32]


@runtime_checkable
class Engine(Protocol):
    #: "onnxruntime" or "torchscript": shown in /models and the model-info metric.
    name: str
    #: Where it runs, e.g. "CPUExecutionProvider", "CUDAExecutionProvider", "cpu", "cuda:0".
    provider: str

    def run(self, batch: Batch) -> Logits:
        """Logits of shape (N, num_classes) for a float32 NCHW batch."""
        ...

    def warmup(self, max_batch_size: int) -> None:
        """Run every batch shape this engine will see up to ``max_batch_size`` (its own
        choice: it knows which shapes it plans, compiles or captures), so the first real
        request pays no set-up cost."""
        ...

    def close(self) -> None: ...
