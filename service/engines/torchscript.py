"""TorchScript engine: runs ``model.pt`` with libtorch, on CPU or one CUDA device.

The artifact is stored unfrozen; it is frozen here after being moved to its device and
precision (see :func:`load_frozen` for why). ``run`` holds no lock:
the batcher calls it from one thread per model, and libtorch releases the GIL inside
the forward pass.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from service.engines.base import Batch, Logits

logger = logging.getLogger(__name__)

#: Extra file inside the TorchScript zip: the input shape, which a loaded graph does not
#: reliably carry, so the engine can warm up without the model config.
META_FILE = "resnet_serve.json"


@contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's "torch.jit.* is deprecated" FutureWarnings, and only those.

    TorchScript is the deliberate artifact format of this engine; the warnings would
    otherwise print on every export and every server start.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def load_frozen(
    path: Path, *, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.jit.ScriptModule, tuple[int, int, int]]:
    """Load ``path`` onto ``device`` in ``dtype``, freeze it; also return its (C, H, W).

    Freezing folds BatchNorm into the convolutions and drops the attribute lookups,
    the main TorchScript speed-up for inference.
    """
    extra = {META_FILE: ""}
    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        module.eval()
        if dtype != torch.float32:
            module.to(dtype=dtype)
        frozen = torch.jit.freeze(module)
    try:
        channels, height, width = json.loads(extra[META_FILE])["input_shape"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(
            f"{path}: no valid {META_FILE} inside; re-export it with `resnet-serve export`"
        ) from None
    return frozen, (int(channels), int(height), int(width))


def choose_device(device: str) -> torch.device:
    """Map "auto" to the current CUDA device when there is one, else CPU.

    An explicit "cuda" without CUDA is an error: the user asked for a GPU and would
    otherwise get a far slower CPU without noticing.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device"
            )
        chosen = torch.device(device)
        return chosen if chosen.index is not None else torch.device("cuda", 0)
    if device != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device("cpu")


class TorchScriptEngine:
    """One frozen TorchScript module on one device."""

    name = "torchscript"

    def __init__(
        self, artifact: Path, *, device: str = "auto", threads: int = 0, fp16: bool = False
    ) -> None:
        if threads > 0:
            # Process-wide in libtorch (one intra-op pool), so the last engine to start
            # wins; the service passes one value for all models.
            torch.set_num_threads(threads)
        self._device = choose_device(device)
        if fp16 and self._device.type != "cuda":
            # CPU kernels for half are slow or missing; the config documents fp16 as
            # ignored on CPU, so say it once here rather than fail.
            logger.warning("%s: fp16 asked for on %s; running fp32", artifact, self._device)
            fp16 = False
        self._dtype = torch.float16 if fp16 else torch.float32
        self._module, self._input_shape = load_frozen(
            artifact, device=self._device, dtype=self._dtype
        )
        self.provider = str(self._device)
        self.fp16 = fp16

    def run(self, batch: Batch) -> Logits:
        """Logits as float32 on the host, whatever the device and precision.

        A torch tensor (GPU preprocessing: already on this device) is taken as it is, so
        the batch never goes through host memory.
        """
        with torch.inference_mode():
            if isinstance(batch, torch.Tensor):
                inputs = batch
            else:
                inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            inputs = inputs.to(self._device, dtype=self._dtype)
            logits = self._module(inputs)
            return logits.to("cpu", dtype=torch.float32).numpy()

    def warmup(self, max_batch_size: int) -> None:
        """Two runs per size, for powers of two up to the limit: TorchScript's profiling
        executor records shapes on the first forward and compiles an optimised graph on
        the second; CUDA also picks kernels per shape. Either would otherwise land on a
        real request."""
        size, sizes = 1, []
        while size < max_batch_size:
            sizes.append(size)
            size *= 2
        for size in (*sizes, max_batch_size):
            batch = np.zeros((size, *self._input_shape), dtype=np.float32)
            for _ in range(2):
                self.run(batch)

    def close(self) -> None:
        del self._module
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
