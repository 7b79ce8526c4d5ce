"""What this python can run, as ``key=value`` lines for scripts/gpu-check.sh.

Never fails: a missing module is a ``no``, which the script turns into a step it skips
and says so.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

# Run as a file from the repository root: the service package sits one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODULES = (
    "torch",
    "torchvision",
    "onnxruntime",
    "onnx",
    "onnxscript",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "fastapi",
    "uvicorn",
)


def main() -> None:
    print(f"python_version={platform.python_version()}")
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # any import failure means: not usable here
            print(f"{name}=no")
            continue
        print(f"{name}=yes")
        print(f"{name}_version={getattr(module, '__version__', '?')}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        print(f"cuda={'yes' if cuda else 'no'}")
        if cuda:
            print(f"cuda_device={torch.cuda.get_device_name(0)}")
            print(f"torch_cuda={torch.version.cuda}")
    except Exception:
        print("cuda=no")
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        print(f"ort_providers={','.join(providers)}")
        print(f"ort_cuda={'yes' if 'CUDAExecutionProvider' in providers else 'no'}")
        print(f"ort_trt={'yes' if 'TensorrtExecutionProvider' in providers else 'no'}")
    except Exception:
        print("ort_cuda=no")
    try:
        importlib.import_module("service.pipeline")
        importlib.import_module("service.preprocess_torch")
        print("service=yes")
    except Exception as exc:
        print(f"service=no ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    main()
