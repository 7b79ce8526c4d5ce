#!/usr/bin/env bash
# Re-resolve the serving image's lock files (hashes included; the Dockerfile installs
# with --require-hashes). Run after changing pyproject.toml's dependencies, serve.in or
# gpu-constraints.txt, and commit the result:
#
#   bash requirements/compile.sh            # needs uv (pip install uv) and the index
#
# --universal: one resolution valid for every platform and Python >= 3.11, so the same
# lock serves python:3.11-slim (CPU) and the CUDA image's Python 3.12 (GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
common=(pyproject.toml requirements/serve.in --universal --python-version 3.11
  --generate-hashes --quiet --custom-compile-command "bash requirements/compile.sh")
"$UV" pip compile "${common[@]}" --extra cpu -o requirements/serve-cpu.lock
"$UV" pip compile "${common[@]}" --extra gpu -c requirements/gpu-constraints.txt \
  -o requirements/serve-gpu.lock
