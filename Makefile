# noisylab: the verbs a newcomer types. Every target sets up .venv on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: help install run test test-fast bench gpu-check gpu-wheels lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install noisylab with its dev tools

run: $(STAMP)  ## the main job: Co-teaching on digits (embedded) with 50% symmetric noise, one thread; ARGS=... adds overrides
	WANDB_MODE=$${WANDB_MODE:-offline} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m noisylab $(ARGS)

test: $(STAMP)  ## the test suite (CPU, about 10 minutes; one thread per process: tiny networks train faster so)
	WANDB_MODE=offline OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q $(ARGS)

test-fast: $(STAMP)  ## the suite less the end-to-end command-line runs (for development)
	WANDB_MODE=offline OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -m "not slow" --deselect tests/test_cli.py $(ARGS)

bench: $(STAMP)  ## framework overhead and other speed ratios, measured in one run
	$(BIN)/python -m noisylab.bench $(ARGS)

# The GPU machine is bare and offline: its python3 has torch & co. but not hydra, omegaconf,
# pydantic, higher, mnist1d; `make gpu-wheels` (here) puts them as wheels in .whl/, which
# travels with the tree; gpu-check installs them with --no-deps into /tmp/noisylab-site.
gpu-check:  ## the GPU check (GPU tests, bench, throughput) -> $$OUT or gpu-check/; a CPU dry run without CUDA
	@py=$(BIN)/python; [ -x $$py ] || py=python3; \
	if ! $$py -c "import hydra, omegaconf, pydantic, higher" 2>/dev/null; then \
	  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu-check: hydra-core & co. are missing and .whl/ holds no wheels (run make gpu-wheels where PyPI answers, and bring .whl/)"; exit 2; }; \
	  $$py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/noisylab-site .whl/*.whl || exit 2; \
	  export PYTHONPATH=/tmp/noisylab-site$${PYTHONPATH:+:$$PYTHONPATH}; fi; \
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $$py -m noisylab.gpu_check $(ARGS)

gpu-wheels:  ## download the wheels gpu-check needs on the offline GPU machine into .whl/
	PY=$(BIN)/python scripts/gpu_wheels.sh

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check noisylab tests

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
