# One entry point for people and CI. `make serve` on a fresh machine installs what serving
# and export need (no test or load tools), exports the default model and serves it;
# `make test` adds the rest and runs the test suite; `make install` installs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned here, not in pyproject: on the project's machines these
# exact releases come from local disk. Elsewhere, override, e.g. a CPU-only build:
#   make TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ORT_EXTRA ?= cpu
MODEL ?= resnet50
REPOSITORY ?= models
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve model test lint bench triton-env loadtest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Two stamps: `make test` after `make serve` installs only what is still missing.
SERVE_EXTRAS = $(ORT_EXTRA),export
ALL_EXTRAS = $(ORT_EXTRA),export,quantize,tracing,test,load

$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[$(SERVE_EXTRAS)]"
	touch $@

$(VENV)/.installed: $(VENV)/.installed-serve
	$(BIN)/python -m pip install -e ".[$(ALL_EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# Pretrained weights when they can be had (torch hub cache or download); otherwise
# random weights, loudly: a warning, and "random (untrained)" in every response.
$(REPOSITORY)/$(MODEL)/config.json: | $(VENV)/.installed-serve
	$(BIN)/resnet-serve export $(MODEL) --weights DEFAULT --allow-random-fallback --repository $(REPOSITORY)

model: $(REPOSITORY)/$(MODEL)/config.json

serve: $(VENV)/.installed-serve model
	$(BIN)/resnet-serve serve --repository $(REPOSITORY) --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service
	$(BIN)/mypy

# Engine limit, every front door at concurrency 1..128, Triton beside them (when
# `make triton-env` was run once) and 12 MP phone photos, with a load generator whose own
# CPU is reported; writes benchmarks/results/<machine>-<date>.md/.json. About 20 min on
# 2 cores; BENCH_ARGS="--quick" checks the harness in about a minute. docs/BENCHMARKS.md
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# PyTriton (Triton 2.51) in its own venv under .cache/: it needs numpy<2, we run numpy 2.
triton-env: install
	$(BIN)/python -m benchmarks.triton --setup

# Locust, headless, against a running server (local by default; HOST_URL for a deployed
# one). CSVs go to .cache/loadtest/. E.g. LOCUST_ARGS="--model resnet18 --images-per-request 4"
HOST_URL ?= http://$(HOST):$(PORT)
LOCUST_USERS ?= 16
LOCUST_RATE ?= 4
LOCUST_TIME ?= 60s
LOCUST_ARGS ?=
loadtest: install
	mkdir -p .cache/loadtest
	$(BIN)/locust -f loadtest/locustfile.py --headless -u $(LOCUST_USERS) -r $(LOCUST_RATE) \
		-t $(LOCUST_TIME) --host $(HOST_URL) --csv .cache/loadtest/locust $(LOCUST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
