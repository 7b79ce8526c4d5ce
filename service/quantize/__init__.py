"""int8 static quantization of exported models (``resnet-serve quantize``).

``quantize_model`` turns an fp32 ONNX version into an int8 QDQ version beside it,
calibrated on the user's images, evaluated against fp32 and refused below an agreement
threshold. Needs ``onnx`` and ``onnxruntime`` (extras ``quantize`` + ``cpu``).

Nothing heavy is imported here: ``service.cli`` imports ``service.quantize.cli`` on
every start, including ``resnet-serve serve`` on installs without ``onnx``. The public
names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CalibrationError": "service.quantize.calibration",
    "DEFAULT_MIN_AGREEMENT": "service.quantize.pipeline",
    "QuantizeError": "service.quantize.pipeline",
    "QuantizeResult": "service.quantize.pipeline",
    "quantize_model": "service.quantize.pipeline",
    "QuantizationRefused": "service.quantize.report",
    "SetReport": "service.quantize.report",
    "METHODS": "service.quantize.static",
    "QuantOptions": "service.quantize.static",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
