# resnet-serve container image: the HTTP and gRPC service with its models built in.
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before): it
# builds only the stages that the chosen build arguments need.
#
#   docker build -t resnet-serve:cpu .                          # CPU, resnet50 pretrained
#   docker build --build-arg VARIANT=gpu -t resnet-serve:gpu .  # CUDA + onnxruntime-gpu
#   docker build --build-arg MODEL=resnet18 --build-arg MODELS=resnet18,resnet50 .
#   docker build --build-arg MODEL=resnet20 --build-arg CHECKPOINT=checkpoints/resnet20.th .
#   docker build --build-arg MODEL_SOURCE=context --build-arg MODEL=resnet50 .  # ./models
#   docker build --build-arg EXTRAS=torchscript .               # adds PyTorch for model.pt
#
# Python packages come from a lock file with hashes (requirements/serve-<VARIANT>.lock,
# made by requirements/compile.sh): the same build resolves the same versions. Label the
# image with what it was built from:
#   --build-arg VERSION="$(python3 -c 'import service; print(service.__version__)')"
#   --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE=<repository URL>
#
# Offline (CI): --build-arg BASE_IMAGE=<local python3 image> --build-arg WHEELS_SOURCE=context
# --build-arg WHEELHOUSE=<dir of wheels> --build-arg MODEL_SOURCE=context
# --build-arg MODEL_DIR=<exported repository>; see .ci/deploy-check.sh and docs/DEPLOY.md.

# cpu: BASE_IMAGE + onnxruntime. gpu: CUDA_BASE_IMAGE + onnxruntime-gpu. The CUDA major
# must be the one the locked onnxruntime-gpu was built for: requirements/serve-gpu.lock
# pins 1.31.1, which loads libcublas.so.13 and cuDNN 9, so CUDA 13. To move to another
# CUDA major, change requirements/gpu-constraints.txt and this image together.
ARG VARIANT=cpu
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
# build: wheels are built here from the source (needs the package index).
# context: a ready wheelhouse is copied from the build context (offline builds).
ARG WHEELS_SOURCE=build
# export: models are exported here with PyTorch (downloads pretrained weights).
# context: an already exported model repository is copied from the build context.
ARG MODEL_SOURCE=export

# ---------------------------------------------------------------- bases, per variant
FROM ${BASE_IMAGE} AS base-cpu

FROM ${CUDA_BASE_IMAGE} AS base-gpu
# The CUDA images carry no Python. Versions are whatever the base release pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The image has CUDA and cuDNN but no TensorRT: ask for CUDA (the service adds CPU as the
# fallback) instead of failing over from TensorRT at every start. On a TensorRT base,
# override this (RESNET_SERVE_PROVIDERS=TensorrtExecutionProvider,CUDAExecutionProvider).
ENV RESNET_SERVE_PROVIDERS=CUDAExecutionProvider

# A stage of this file chosen by a build argument, not an image: nothing to tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# ---------------------------------------------------------------- wheels
# Wheels for the base image's own Python, built where the index is reachable. The
# runtime stage installs from them with --no-index, both ways.
FROM base AS wheels-build
ARG VARIANT
ARG EXTRAS=""
# Used only when EXTRAS asks for PyTorch: PyPI's default torch is a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY requirements ./requirements
# The locked dependencies (hash-checked), then the project's own wheel without
# dependencies. EXTRAS are not in the lock: they resolve freely, on top.
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --wheel-dir /wheels --require-hashes \
        -r "requirements/serve-${VARIANT}.lock" \
 && /opt/build/bin/pip wheel --wheel-dir /wheels --no-deps . \
 && if [ -n "${EXTRAS}" ]; then \
        /opt/build/bin/pip wheel --wheel-dir /wheels --extra-index-url "${TORCH_INDEX_URL}" \
            ".[${EXTRAS}]"; \
    fi

FROM scratch AS wheels-context
ARG WHEELHOUSE=build/docker/wheels
COPY ${WHEELHOUSE}/ /wheels/

# A stage of this file chosen by a build argument, not an image: nothing to tag.
# hadolint ignore=DL3006
FROM wheels-${WHEELS_SOURCE} AS wheels

# ---------------------------------------------------------------- models
# The exporter and PyTorch live only in this stage; the runtime gets /models alone.
FROM base AS models-export
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The model served by default, and every architecture exported (space- or
# comma-separated, e.g. "resnet18,resnet50"; MODEL among them), as `make serve` takes them.
ARG MODEL=resnet50
ARG MODELS=${MODEL}
# DEFAULT (best pretrained), a torchvision weights name, or random.
ARG WEIGHTS=DEFAULT
# Path inside the build context (e.g. checkpoints/resnet20.th) of a checkpoint to load
# instead of WEIGHTS, and optionally its labels file. Needs one architecture in MODELS.
ARG CHECKPOINT=""
ARG LABELS=""
# Space-separated artifact formats: onnx, torchscript.
ARG FORMATS=onnx
# 1: random weights (loudly marked in every response) when pretrained ones cannot be
# downloaded. Off by default: an image must not ship untrained weights by accident.
ARG ALLOW_RANDOM_FALLBACK=0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python3 -m venv /opt/export \
 && /opt/export/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" ".[export,cpu]"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=bind,target=/context \
    set -eu; \
    models="${MODELS//,/ }"; \
    flags=(); \
    for f in ${FORMATS}; do flags+=(--format "$f"); done; \
    if [ -n "${CHECKPOINT}" ]; then \
        [ "$(wc -w <<<"${models}")" -eq 1 ] || { echo "CHECKPOINT needs exactly one of MODELS" >&2; exit 1; }; \
        flags+=(--checkpoint "/context/${CHECKPOINT}"); \
    else \
        flags+=(--weights "${WEIGHTS}"); \
    fi; \
    if [ -n "${LABELS}" ]; then flags+=(--labels "/context/${LABELS}"); fi; \
    if [ "${ALLOW_RANDOM_FALLBACK}" = 1 ]; then flags+=(--allow-random-fallback); fi; \
    for model in ${models}; do \
        /opt/export/bin/resnet-serve export "${model}" "${flags[@]}" --repository /models; \
    done

FROM scratch AS models-context
ARG MODEL_DIR=models
COPY ${MODEL_DIR}/ /models/

# A stage of this file chosen by a build argument, not an image: nothing to tag.
# hadolint ignore=DL3006
FROM models-${MODEL_SOURCE} AS models

# ---------------------------------------------------------------- runtime
FROM base AS runtime
ARG VARIANT
ARG EXTRAS=""
# What the image was built from (OCI image spec annotations; `docker image inspect`).
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=""
ARG CREATED=""
LABEL org.opencontainers.image.title="resnet-serve" \
      org.opencontainers.image.description="ResNet image classification over HTTP and gRPC (ONNX Runtime, dynamic batching, Open Inference Protocol, Prometheus metrics)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      io.resnet-serve.variant="${VARIANT}"
# One layer: the venv, installed offline from the wheels stage (mounted, never copied
# in): first exactly the lock, every file hash-checked, then the project without
# dependencies (so nothing outside the lock sneaks in), then EXTRAS if asked for.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements,target=/requirements \
    python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --require-hashes \
        -r "/requirements/serve-${VARIANT}.lock" \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --no-deps resnet-serve \
 && if [ -n "${EXTRAS}" ]; then \
        /opt/venv/bin/pip install --no-index --find-links /wheels "resnet-serve[${EXTRAS}]"; \
    fi \
 && /opt/venv/bin/pip check \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app
# Owned by root: the service only reads its models (and verifies their checksums).
COPY --from=models /models /models
# The model a request that names none gets (empty: the first by name). Checked here, so
# that a MODEL the repository lacks fails the build, not every start of the container.
ARG MODEL=resnet50
RUN [ -z "${MODEL}" ] || [ -f "/models/${MODEL}/config.json" ] \
 || { echo "MODEL=${MODEL} is not in the image's models: $(echo /models/*)" >&2; exit 1; }
ENV PATH=/opt/venv/bin:${PATH} \
    RESNET_SERVE_HOST=0.0.0.0 \
    RESNET_SERVE_PORT=8000 \
    RESNET_SERVE_REPOSITORY=/models \
    RESNET_SERVE_DEFAULT_MODEL=${MODEL}
USER 10001:10001
WORKDIR /home/app
# HTTP (/classify, /v2 REST, /metrics, /health) and Open Inference Protocol gRPC
# (RESNET_SERVE_GRPC_PORT, default 8001; 0 turns it off).
EXPOSE 8000 8001
# Healthy = models loaded and warmed, and the process answers: /health/startup is 503
# while loading (start-period covers it), 200 once the default model serves, and stays
# 503 if loading ended without it; a hung process does not answer at all.
# Readiness (draining, stuck engine) is for load balancers, not for restarts.
# No curl in the slim images; the venv's Python asks instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RESNET_SERVE_PORT', '8000') + '/health/startup', timeout=4)"]
# Exec form: resnet-serve is PID 1 and gets SIGTERM itself, then drains (drain_timeout_s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["resnet-serve"]
CMD ["serve"]
