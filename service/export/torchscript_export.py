"""PyTorch eager -> ``model.pt`` (TorchScript), the artifact of the TorchScript engine.

The module is traced, not scripted: ResNets have no data-dependent control flow, and
tracing works for torchvision's models and ours alike. It is saved *unfrozen*:
``torch.jit.freeze`` inlines the weights as graph constants, after which ``.half()``
and ``.to("cuda")`` no longer reach them, so the engine (and the parity check, which
loads the artifact the same way) freezes after choosing device and precision; see
:func:`load_frozen`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

#: Not 1, so nothing batch-size-specific can be baked into the trace unnoticed; the
#: parity check then runs other batch sizes.
EXAMPLE_BATCH = 2
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


def export_torchscript(module: nn.Module, path: Path, *, input_size: int) -> Path:
    """Trace ``module`` (eval mode, CPU) and save it to ``path``."""
    example = torch.randn(EXAMPLE_BATCH, 3, input_size, input_size)
    with quiet_torchscript(), torch.no_grad():
        # check_trace re-runs and compares the trace in-process (3x the time for
        # ResNet-18); the parity check compares the *saved* artifact on more inputs.
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        meta = json.dumps({"input_shape": [3, input_size, input_size]})
        traced.save(str(path), _extra_files={META_FILE: meta})
    return path


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
