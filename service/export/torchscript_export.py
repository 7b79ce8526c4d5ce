"""PyTorch eager -> ``model.pt`` (TorchScript), the artifact of the TorchScript engine.

The module is traced, not scripted: ResNets have no data-dependent control flow, and
tracing works for torchvision's models and ours alike. It is saved *unfrozen*:
``torch.jit.freeze`` inlines the weights as graph constants, after which ``.half()``
and ``.to("cuda")`` no longer reach them, so the engine (and the parity check, which
loads the artifact through the engine) freezes after choosing device and precision; see
:func:`service.engines.torchscript.load_frozen`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from service.engines.torchscript import META_FILE, quiet_torchscript

#: Not 1, so nothing batch-size-specific can be baked into the trace unnoticed; the
#: parity check then runs other batch sizes.
EXAMPLE_BATCH = 2


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
