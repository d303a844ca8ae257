# The user's verbs. Every target depends on `install`, which builds .venv/ once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/default.yaml
# Extra CLI arguments, e.g. make data ARGS="--set judge.model=gpt-4o"
ARGS ?=

.PHONY: install data train distill eval dry-run test test-quick lint format clean

install: $(VENV)/.installed

# torch first and pinned: the CPU build on disk, never a multi-GB CUDA build pulled by a dependency.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e ".[dev]"
	touch $@

data: install
	$(BIN)/tapir data --recipe $(RECIPE) $(ARGS)

# Round by round on the curriculum `make data` wrote; resumes where it stopped.
train: install
	$(BIN)/tapir train --recipe $(RECIPE) $(ARGS)

# The whole TAPIR loop: data, then training that re-scores with each new checkpoint.
distill: install
	$(BIN)/tapir distill --recipe $(RECIPE) $(ARGS)

# AlpacaEval 2.0 + MT-Bench on every round; leaderboard, plots and an HTML report.
eval: install
	$(BIN)/tapir eval --recipe $(RECIPE) $(ARGS)

dry-run: install
	$(BIN)/tapir distill --recipe $(RECIPE) --dry-run $(ARGS)

test: install
	$(BIN)/pytest

test-quick: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf outputs .cache
