# The user's verbs. Every target depends on `install`, which builds .venv/ once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/default.yaml
# Extra CLI arguments, e.g. make data ARGS="--set judge.model=gpt-4o"
ARGS ?=

.PHONY: install data train distill ablate eval dry-run review review-pull push argilla-env argilla-server test test-quick test-unit lint format clean

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

# TAPIR against random selection and each of its steps switched off, at equal training budget.
ablate: install
	$(BIN)/tapir ablate --recipe $(RECIPE) $(ARGS)

# AlpacaEval 2.0 + MT-Bench on every round; leaderboard, plots and an HTML report.
eval: install
	$(BIN)/tapir eval --recipe $(RECIPE) $(ARGS)

# Human spot-checks: a stratified sample of a round to Argilla, then the answers back
# (they feed the next `make data`). Needs ARGILLA_API_URL / ARGILLA_API_KEY (see README).
review: install
	$(BIN)/tapir review push --recipe $(RECIPE) $(ARGS)

review-pull: install
	$(BIN)/tapir review pull --recipe $(RECIPE) $(ARGS)

# The curated dataset to the Hugging Face Hub (HF_TOKEN); ARGS="--dry-run" writes it locally.
push: install
	$(BIN)/tapir push --recipe $(RECIPE) $(ARGS)

# A real Argilla server without Docker: argilla-server in its own venv (it pins pydantic~=2.9,
# fastapi~=0.115, httpx~=0.27), osmem-server as its search engine, Debian's redis-server.
# typer<0.10 (argilla-server's pin) breaks with click>=8.2; huggingface-hub<1 keeps click there.
ARGILLA_VENV := .venv-argilla
argilla-env: $(ARGILLA_VENV)/.installed

$(ARGILLA_VENV)/.installed:
	$(PYTHON) -m venv $(ARGILLA_VENV)
	$(ARGILLA_VENV)/bin/pip install --quiet "argilla-server==2.8.0" "osmem-server==0.1.6" "click<8.2" "huggingface-hub<1"
	touch $@

argilla-server: install argilla-env
	$(BIN)/python -m tapir.review.local_server

dry-run: install
	$(BIN)/tapir distill --recipe $(RECIPE) --dry-run $(ARGS)

# Tests are tiered by cost (pytest markers, README "Tests"): unit, integration, e2e, slow (the
# real embedded model), argilla (a live server; argilla-env + redis-server). Two xdist workers:
# most tests wait on engines and subprocesses; the slow and argilla tiers each keep to one worker.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

test: install argilla-env
	$(BIN)/pytest $(PYTEST_PARALLEL)

# unit + integration: what to run while working (under 5 minutes on 2 cores).
test-quick: install
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not e2e and not slow and not argilla"

test-unit: install
	$(BIN)/pytest -m unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf outputs .cache
