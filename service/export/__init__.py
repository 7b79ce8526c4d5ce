"""``resnet-serve export``: architectures -> ONNX / TorchScript artifacts in the repository.

Importing this package is cheap on purpose (the CLI registers the subcommand on every
start, and the TorchScript engine imports a submodule): PyTorch, torchvision and ONNX
are imported by the submodules that need them, never here.
"""

from __future__ import annotations

#: ONNX opset written by default: the torch 2.14 exporter's own default, and run by
#: every onnxruntime our extras allow (>= 1.20 supports opsets up to 21).
DEFAULT_OPSET = 20
#: Largest |logit| difference to PyTorch eager an fp32 artifact may show. Faithful
#: exports differ by ~1e-5 (fused kernels reorder sums); export bugs by whole units.
DEFAULT_PARITY_BOUND = 1e-3
