"""ONNX Runtime static int8 quantization (QDQ, per-channel weights), with our defaults.

Why these defaults (measured on this project's 2-core AVX-512 VNNI Xeon, ORT 1.32; see
docs/QUANTIZATION.md for the figures):

* **Static, not dynamic**: dynamic quantization only covers MatMul/Gemm; a ResNet's time
  is in its convolutions, which gain only with activation ranges fixed in advance.
* **QDQ format**: ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear
  group into one integer kernel (QLinearConv) at load time; QDQ is what ORT recommends.
* **uint8 activations, int8 per-channel weights** (U8S8): MLAS's x86 kernels use
  VPDPBUSD (VNNI, unsigned x signed), so U8S8 runs ~3x faster than S8S8 at batch 32 for
  ResNet-18 here. Per-channel weight scales cost nothing at run time and keep the many
  small-magnitude filters of BatchNorm-folded convolutions from rounding to zero.
* **reduce_range off**: the 7-bit weight trick only avoids VPMADDUBSW saturation on
  AVX2/AVX-512 CPUs *without* VNNI; turn it on (``reduce_range=True``) for such fleets.
* **Calibration: percentile by default**: it clips the rare outliers that MinMax stretches
  the int8 range for; on the CIFAR ResNet-20 it agreed best with fp32 (docs).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.quantize.calibration import CalibrationReader

Method = Literal["minmax", "entropy", "percentile"]
QuantTypeName = Literal["QUInt8", "QInt8"]
METHODS: tuple[Method, ...] = ("minmax", "entropy", "percentile")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantOptions:
    """Everything that changes the int8 model; recorded verbatim in ``version.json``."""

    method: Method = "percentile"
    activation_type: QuantTypeName = "QUInt8"
    weight_type: QuantTypeName = "QInt8"
    per_channel: bool = True
    reduce_range: bool = False
    #: Percentile kept by the ``percentile`` method (ORT's default).
    percentile: float = 99.999

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r} unknown; use one of {METHODS}")
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError(f"percentile must be within [90, 100], got {self.percentile}")


def quantize_onnx(
    source: Path, destination: Path, reader: CalibrationReader, options: QuantOptions
) -> None:
    """Write the int8 QDQ model for ``source`` (fp32 ONNX) to ``destination``.

    ``quant_pre_process`` runs first (symbolic shape inference + ORT graph optimisation,
    folding BatchNorm into the convolutions) as ORT recommends: calibrating the graph
    that will actually run, not one with separate BatchNorm nodes to be folded later.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[options.method]
    # ORT's histogram calibrators print() progress lines; keep them out of our stdout
    # (which carries the report) and in the debug log instead.
    chatter = io.StringIO()
    with (
        tempfile.TemporaryDirectory(prefix="resnet-serve-quant-") as work,
        contextlib.redirect_stdout(chatter),
    ):
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        reader.rewind()
        quantize_static(
            str(prepared),
            str(destination),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=getattr(QuantType, options.activation_type),
            weight_type=getattr(QuantType, options.weight_type),
            calibrate_method=calibrate_method,
            extra_options={
                # One batch per collect call: bounds the calibrator's memory (see
                # CalibrationReader); the statistics merge across calls.
                "CalibStridedMinMax": 1,
                "CalibPercentile": options.percentile,
            },
        )
    logger.debug("onnxruntime quantization output:\n%s", chatter.getvalue())
