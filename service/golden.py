"""The golden set a version carries in its ``version.json``: what its engine answered.

Written by the tool that made the artifact (export, import, quantize), read by the gate
(:mod:`service.gate`) at every load. Kept free of service imports so the repository's
schema can include it without a cycle.

The bound is relative to the largest reference logit of the set (``rtol * scale +
atol``): logits of a trained ResNet span ~10-30, of a random one ~0.1-1, and one
absolute number cannot be tight for both. Why these values:

* ``fp32``: the load runs the same artifact through the same engine class; what may
  differ is the thread count (reduction order) and the CPU's vector width. Measured
  here: bit-identical logits at 1 and 2 threads (ResNet-20 CIFAR, ResNet-18); across
  instruction sets fp32 kernels differ by ~1e-6 of the scale (not measured here). 1e-3
  keeps a wide margin over that and still sits far below what a wrong mean/std or
  other weights do (10-100% of the scale; docs/OPERATIONS.md, the gate).
* ``int8``: integer kernels differ by instruction set (AVX2 u8s8 with ``reduce_range``,
  VNNI, ARM dot products) and requantise at each layer, so two CPUs legitimately differ
  by a few percent of the scale; 5e-2 admits that and still refuses a wrong recipe.
* On a GPU the execution itself is less exact than the recording (CUDA's TF32
  convolutions for fp32, half precision with ``fp16``), so the gate widens the recorded
  bound to :data:`GPU_FLOOR` for that execution. An fp16 overflow (inf/NaN logits)
  fails any bound.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Folder inside a version holding the golden images.
GOLDEN_DIR = "golden"
Execution = Literal["fp32", "int8", "tf32", "fp16"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Bound(_Frozen):
    """Largest allowed ``|logit - recorded|``: ``rtol * scale + atol``."""

    rtol: float = Field(gt=0, le=1)
    atol: float = Field(ge=0)

    def at(self, scale: float) -> float:
        return self.rtol * scale + self.atol

    def widened(self, other: Bound) -> Bound:
        return Bound(rtol=max(self.rtol, other.rtol), atol=max(self.atol, other.atol))


#: The bound recorded per artifact precision (see the module docstring for why).
BOUNDS: dict[str, Bound] = {
    "fp32": Bound(rtol=1e-3, atol=1e-4),
    "int8": Bound(rtol=5e-2, atol=1e-3),
}
#: The least bound an execution on a GPU gets, whatever was recorded on the CPU.
GPU_FLOOR: dict[Execution, Bound] = {
    "tf32": Bound(rtol=1e-2, atol=1e-3),
    "fp16": Bound(rtol=5e-2, atol=1e-2),
}


class GoldenInput(_Frozen):
    """One golden image: a file in the version folder and its checksum."""

    file: str = Field(pattern=rf"^{GOLDEN_DIR}/[A-Za-z0-9_.-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class GoldenSet(_Frozen):
    """Images, the logits each artifact format's engine gave them, and the bound."""

    precision: str
    bound: Bound
    inputs: tuple[GoldenInput, ...] = Field(min_length=1)
    #: Per artifact format ("onnx", "torchscript"): one row of logits per input.
    logits: dict[str, tuple[tuple[float, ...], ...]] = Field(min_length=1)
    #: Who answered: engine and provider, e.g. "onnxruntime on CPUExecutionProvider".
    recorded_by: str = ""


def bound_for(precision: str) -> Bound:
    """The bound recorded for an artifact of ``precision`` (unknown ones: int8's)."""
    return BOUNDS.get(precision, BOUNDS["int8"])
