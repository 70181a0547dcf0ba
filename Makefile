# noisylab: the verbs a newcomer types. Every target sets up .venv on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: help install run test test-fast bench lint clean

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

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check noisylab tests

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
