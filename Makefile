# One entry point for people and CI.
#   make serve   the light serving install (no PyTorch) in .venv, the model exported in a
#                separate environment (.cache/export-venv, PyTorch's CPU wheels when
#                there is no NVIDIA driver), then serves it on two ports.
#   make test    installs everything in .venv (PyTorch included) and runs the test suite.
PYTHON ?= python3
# Serving environment: `make serve` puts only the serving install here (about 300 MB);
# `make install` / `make test` add everything else.
VENV ?= .venv
BIN := $(VENV)/bin
# Export environment: PyTorch, only to export a model. Throwaway: `make clean-export`
# removes it; the exported models stay. EXPORT_VENV=$(VENV) exports from the full install.
EXPORT_VENV ?= .cache/export-venv
# torch/torchvision are pinned here, not in pyproject: on the project's machines these
# exact releases come from local disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# PyTorch's CPU wheels, used for the export environment when there is no NVIDIA driver
# and this index answers; otherwise the ordinary index (scripts/torch_source.py).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
ORT_EXTRA ?= cpu
# MODEL is served by default; MODELS are the models loaded (default: MODEL alone; a
# comma-separated list that includes MODEL). Each is exported first if missing.
MODEL ?= resnet50
MODELS ?= $(MODEL)
REPOSITORY ?= models
HOST ?= 127.0.0.1
# HTTP (/classify, V2 REST, health, metrics) and V2 gRPC.
PORT ?= 8000
GRPC_PORT ?= 8001

comma := ,
MODEL_LIST := $(subst $(comma), ,$(MODELS))

.PHONY: install serve model test lint bench triton-env loadtest clean clean-export

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Two stamps: `make test` after `make serve` installs only what is still missing.
ALL_EXTRAS = $(ORT_EXTRA),export,quantize,tracing,test,load

$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[$(ORT_EXTRA)]"
	touch $@

$(VENV)/.installed: $(VENV)/.installed-serve
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[$(ALL_EXTRAS)]"
	touch $@

install: $(VENV)/.installed

$(EXPORT_VENV)/bin/python:
	$(PYTHON) -m venv $(EXPORT_VENV)

$(EXPORT_VENV)/.installed-export: pyproject.toml | $(EXPORT_VENV)/bin/python
	$(EXPORT_VENV)/bin/python -m pip install \
		$$($(PYTHON) scripts/torch_source.py --index "$(TORCH_INDEX)") $(TORCH_SPEC)
	$(EXPORT_VENV)/bin/python -m pip install -e ".[$(ORT_EXTRA),export]"
	touch $@

# Pretrained weights when they can be had (torch hub cache or download); otherwise
# random weights, loudly: a warning, and "random (untrained)" in every response.
$(REPOSITORY)/%/config.json: | $(EXPORT_VENV)/.installed-export
	$(EXPORT_VENV)/bin/resnet-serve export $* --weights DEFAULT --allow-random-fallback \
		--repository $(REPOSITORY)

model: $(foreach m,$(MODEL_LIST),$(REPOSITORY)/$(m)/config.json)

serve: $(VENV)/.installed-serve model
	$(BIN)/resnet-serve serve --repository $(REPOSITORY) --models "$(MODELS)" \
		--default-model "$(MODEL)" --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)

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

clean-export:
	rm -rf $(EXPORT_VENV)

clean: clean-export
	rm -rf $(VENV) .pytest_cache .ruff_cache
