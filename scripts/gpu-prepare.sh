#!/usr/bin/env bash
# Prepare, on a machine WITH network, what scripts/gpu-check.sh needs on a GPU host
# WITHOUT network, in one ignored folder small enough to travel with the working tree:
#
#   scripts/gpu-prepare.sh              # -> .cache/gpu-carry (about 12 MB)
#   scripts/gpu-prepare.sh --with-onnx  # also resnet18's ONNX (+47 MB), for a host that
#                                       # has onnxruntime-gpu but cannot export ONNX
#
# What it puts there:
#   wheels/  the service's own imports the GPU host may lack (pydantic, pydantic-settings
#            and their dependencies), for CPython 3.12 on x86_64 Linux (PY_VERSION to change);
#   shared/  the test data the GPU tests and the benchmark read (photos, the CIFAR-10
#            sample, the CIFAR ResNet-20 checkpoint), from $RESNET_SERVE_SHARED_DIR or ../shared;
#   models/  (--with-onnx) resnet18 with random weights, ONNX.
# resnet50's ONNX (~100 MB) and onnxruntime-gpu (~300 MB) are too big to carry: on the GPU
# host the TorchScript model is exported there (torch and torchvision suffice), and
# ONNX Runtime on the GPU runs only where `pip install onnxruntime-gpu` can.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
CARRY=.cache/gpu-carry
SHARED=${RESNET_SERVE_SHARED_DIR:-../shared}
WITH_ONNX=0
[ "${1:-}" = "--with-onnx" ] && WITH_ONNX=1

rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/shared/data" "$CARRY/shared/models/cifar10-resnet"
timeout 300 "$PY" -m pip download --quiet --dest "$CARRY/wheels" --only-binary=:all: \
    --implementation cp --python-version "$PY_VERSION" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    "pydantic>=2.7" "pydantic-settings>=2.4"
cp -r "$SHARED/data/photos" "$SHARED/data/cifar10-sample" "$CARRY/shared/data/"
cp "$SHARED"/models/cifar10-resnet/{resnet20-12fca82f.th,README.md,LICENSE-weights.txt} \
    "$CARRY/shared/models/cifar10-resnet/" 2>/dev/null \
    || cp "$SHARED/models/cifar10-resnet/resnet20-12fca82f.th" "$CARRY/shared/models/cifar10-resnet/"
if [ $WITH_ONNX = 1 ]; then
    timeout 300 "$PY" -m service.cli export resnet18 --weights random --format onnx \
        --repository "$CARRY/models"
fi
SIZE_MB=$(du -sm "$CARRY" | cut -f1)
echo "prepared $CARRY: ${SIZE_MB} MB"
if [ "$SIZE_MB" -gt 60 ]; then
    echo "too big to travel with the working tree (at most ~60 MB besides the sources)" >&2
    exit 1
fi
