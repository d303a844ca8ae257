"""One served engine per distinct model; every pipeline step, judge and stage is a client.

People who run this at scale run one inference server per model and many clients; we are built
that way at every size. For each distinct model a run uses, :class:`EngineSet` keeps exactly
one engine:

- ``llamacpp``: llama-cpp-python's OpenAI-compatible server (``tapir.serving.llamacpp_server``), one
  process with all cores, on a free loopback port;
- ``vllm``: ``vllm serve`` with tensor/pipeline parallelism and memory from the recipe;
- ``scripted``: tapir's loopback simulator (``tapir.serving.simulator``), canned answers for tests;
- ``openai`` (any ``base_url``): an endpoint the user runs or buys; nothing is started.

Two roles with the same model (the embedded default plays teacher, student and judge) share
one engine: one copy of the weights, one process, no threads fighting over the cores.
Sampling settings, grammars and stop strings travel per request, so they never split an
engine.

Started engines are health-checked before the first step and stopped on normal exit, on error
and on Ctrl-C; each engine process also asks the kernel to end it when tapir dies
(``PR_SET_PDEATHSIG``), which covers SIGTERM and ``kill -9`` of tapir. tapir installs no SIGTERM
handler of its own: distilabel's forked pool workers would inherit it, and its pool teardown
relies on SIGTERM ending them (a Python handler there left a worker blocked for ever).

Engines a parent process already runs are shared with its children (``tapir distill``'s
re-score, for one) through a registry file named in ``TAPIR_ENGINES``; a child attaches to
them and never stops them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tapir.chat_templates import resolve_chat_template
from tapir.errors import EndpointError
from tapir.lifeline import die_with_parent
from tapir.recipe import ModelSpec
from tapir.serving.backends import VLLM, Launch, LlamaCpp, backend_of, endpoint_url
from tapir.serving.embedded import (
    EMBEDDED,
    chat_template_path,
    embedded_gguf_path,
    embedded_model,
    unservable,
)

REGISTRY_ENV = "TAPIR_ENGINES"
EMBEDDED_GGUF = LlamaCpp.embedded_placeholder
EMBEDDED_HF = VLLM.embedded_placeholder


@dataclass
class Engine:
    """One model, served (or reached) at ``base_url``; clients send ``served_name``."""

    id: str
    backend: str
    model: str
    served_name: str
    base_url: str
    max_concurrency: int
    slot_dir: str
    context_length: int = 0
    api_key_env: str | None = None
    supports_n: bool = True  # llama-cpp-python's server answers one choice per request
    guided: str | None = None  # how constraints travel: "grammar" (GBNF), "choice_regex", None
    serves: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    owned: bool = True  # False: started by a parent process (attached through the registry)
    log_file: str | None = None
    uses_gpus: bool = False  # vLLM's GPU build, llama.cpp with layers offloaded
    devices: list[int] | None = None  # its CUDA_VISIBLE_DEVICES; None: every GPU
    share_devices: bool = False

    def placement(self) -> str:
        """Where it runs, for the GPU map."""
        backend = backend_of(self.backend)
        if backend.remote:
            return "remote"
        gpus = "GPU " + ",".join(map(str, self.devices)) if self.devices is not None else "every GPU"
        return gpus if self.uses_gpus else backend.cpu_placement(gpus)

    def plan(self) -> dict[str, Any]:
        """What ``--dry-run --json`` shows of it."""
        remote = backend_of(self.backend).remote
        return {
            "id": self.id,
            "backend": self.backend,
            "model": self.model,
            "served_name": self.served_name,
            "base_url": self.base_url if remote else "(loopback, chosen at start)",
            "max_concurrency": self.max_concurrency,
            "started_by_tapir": not remote,
            "command": [part if part != str(_port(self.base_url)) else "<port>" for part in self.command],
            "serves": sorted(set(self.serves)),
            "devices": self.placement(),
        }


def later_engine_plan(
    id: str,
    backend: str,
    model: str,
    serves: list[str],
    max_concurrency: int | None = None,
    devices: list[int] | None = None,
) -> dict[str, Any]:
    """A dry run's entry for an engine that starts later in the run (a trained checkpoint's),
    in the shape of ``Engine.plan``."""
    adapter = backend_of(backend)
    gpus = adapter.uses_gpus({})
    return {
        "id": id,
        "backend": backend,
        "model": model,
        "base_url": "(loopback, chosen at start)",
        "max_concurrency": max_concurrency or adapter.default_concurrency,
        "started_by_tapir": True,
        "serves": serves,
        "devices": Engine(id, backend, model, "", "", 0, "", uses_gpus=gpus, devices=devices).placement(),
    }


def engines_table(engines: list[dict[str, Any]]) -> Any:
    """One row per engine (``Engine.plan`` entries): what runs, where, and which steps are its clients."""
    from rich.table import Table

    table = Table(
        title="Engines (one per distinct model; every step is a client)", title_justify="left", expand=True
    )
    for column in ("engine", "backend", "model", "started", "devices", "in flight", "serves"):
        table.add_column(column, overflow="fold", ratio=3 if column == "serves" else 1)
    for engine in engines:
        table.add_row(
            engine["id"],
            engine["backend"],
            str(engine["model"]),
            "by tapir" if engine["started_by_tapir"] else f"no: {engine['base_url']}",
            engine.get("devices", ""),
            str(engine["max_concurrency"]),
            ", ".join(engine["serves"]),
        )
    return table


def engine_key(spec: ModelSpec) -> str:
    """What makes two roles' models one engine: the weights and how they are loaded, never
    per-request sampling."""
    template = resolved_template(spec)
    template_hash = (
        hashlib.sha256(template.read_bytes()).hexdigest() if template and template.is_file() else None
    )
    parts = backend_of(spec.backend).engine_identity(spec, template_hash)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolved_template(spec: ModelSpec) -> Path | None:
    if spec.chat_template:
        return resolve_chat_template(spec.chat_template, "chat_template")
    embedded = embedded_model(spec.model)
    if embedded is not None and not embedded.own_template:  # a base model: tapir's template
        return chat_template_path()
    return None  # the model's own (an instruct GGUF carries it)


def served_name(spec: ModelSpec) -> str:
    return backend_of(spec.backend).served_name(spec.model)


def _port(base_url: str) -> int | None:
    from urllib.parse import urlparse

    return urlparse(base_url).port


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now (engines, launchers, test servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _device_env(engine: Engine) -> dict[str, str]:
    if engine.devices is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, engine.devices))}


class EngineSet:
    """The engines of one run. Use as a context manager: everything it started is stopped."""

    def __init__(
        self, cache_dir: Path, log_dir: Path | None = None, seed: int = 42, host: str = "127.0.0.1"
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.host = host  # engines bind it and clients dial it (pipeline.engine_host)
        self.log_dir = log_dir
        self.seed = seed
        self.engines: dict[str, Engine] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self._logs: list[Any] = []
        # Slot files and the registry live here; created only when an engine starts.
        self._work = Path(tempfile.gettempdir()) / f"tapir-engines-{os.getpid()}-{id(self):x}"
        self._attached = _read_registry()
        self._registry_file: Path | None = None
        self._previous_env: str | None = None

    @classmethod
    def for_recipe(cls, recipe: Any, log_dir: Path | None = None) -> EngineSet:
        """The engines of a run of ``recipe``: its cache, seed and engine address."""
        host = recipe.pipeline.engine_host
        return cls(Path(recipe.cache_dir), log_dir=log_dir, seed=recipe.seed, host=host)

    # --- planning -----------------------------------------------------------------------------

    def ensure(self, spec: ModelSpec, role: str, step: str | None = None) -> Engine:
        """The engine for ``spec`` (created, not started, the first time it is asked for)."""
        key = engine_key(spec)
        engine = self.engines.get(key) or self._attached.get(key)
        if engine is not None and engine.context_length < spec.context_length:
            if engine.owned and key not in self._processes:  # not started yet: load it longer
                self._set_context(engine, spec.context_length)
            else:  # running with a shorter context: a second engine for the longer one
                key = f"{key}:ctx{spec.context_length}"
                engine = self.engines.get(key)
        if engine is None:
            engine = self._new_engine(key, spec, role)
        self.engines.setdefault(key, engine)
        engine.serves.append(step or role)
        return engine

    @staticmethod
    def _set_context(engine: Engine, context_length: int) -> None:
        flag = backend_of(engine.backend).context_flag
        if flag in engine.command:
            engine.command[engine.command.index(flag) + 1] = str(context_length)
        engine.context_length = context_length

    def _new_engine(self, key: str, spec: ModelSpec, role: str = "model") -> Engine:
        backend = backend_of(spec.backend)
        if not backend.served:
            raise EndpointError(f"backend {spec.backend!r} is not served by an engine")
        if wrong := unservable(spec.model, backend, role):
            raise EndpointError(wrong)
        name = served_name(spec)
        taken = {e.id for e in self.engines.values()}
        engine_id = f"{backend.name}:{name}"
        if engine_id in taken:  # same weights loaded another way (other options, template)
            free = (f"{engine_id}#{n}" for n in range(2, len(taken) + 3))
            engine_id = next(candidate for candidate in free if candidate not in taken)
        common: dict[str, Any] = {
            "id": engine_id,
            "context_length": spec.context_length,
            "backend": backend.name,
            "model": spec.model,
            "served_name": name,
            "max_concurrency": spec.max_concurrency or backend.default_concurrency,
            "slot_dir": str(self._work / f"slots-{key}"),
            "devices": spec.devices,
            "share_devices": spec.share_devices,
            "uses_gpus": backend.uses_gpus(spec.options),
            "supports_n": backend.supports_n,
            "guided": backend.guided,
        }
        if backend.remote:
            base_url = endpoint_url(spec)
            return Engine(**common, base_url=base_url, api_key_env=spec.api_key_env, owned=False)
        port = free_port(self.host)
        model = spec.model
        if embedded_model(spec.model) is not None and backend.embedded_placeholder:  # made at start
            model = backend.embedded_placeholder + ("" if spec.model == EMBEDDED else f":{spec.model}")
        launch = Launch(
            name=name,
            host=self.host,
            port=port,
            seed=str(self.seed if spec.seed is None else spec.seed),
            template=resolved_template(spec),
            model=model or spec.model,
        )
        command = backend.command(spec, launch)
        return Engine(**common, base_url=f"http://{self.host}:{port}/v1", command=command)

    def plan(self) -> list[dict[str, Any]]:
        return [engine.plan() for engine in self.engines.values()]

    # --- running ------------------------------------------------------------------------------

    def start(self, console: Any = None) -> None:
        """Start every owned engine that is not running, wait until each answers, and publish
        them to child processes. A failure stops whatever was started and names the engine."""
        self.check_placement()
        try:
            for key, engine in self.engines.items():
                if (
                    engine.owned
                    and backend_of(engine.backend).started_by_tapir
                    and key not in self._processes
                ):
                    self._start_one(key, engine, console)
        except BaseException:
            self.stop()
            raise
        self._publish()

    def check_placement(self) -> None:
        """Two engines that run together never share a GPU unless both say they may: each
        would size its memory for the whole device (vLLM takes gpu_memory_utilization of it)."""
        on_gpus = [e for e in self.engines.values() if e.uses_gpus]
        for index, first in enumerate(on_gpus):
            for second in on_gpus[index + 1 :]:
                if first.share_devices and second.share_devices:
                    continue
                if first.devices is None or second.devices is None:
                    shared = "every GPU" if first.devices is None and second.devices is None else "their GPUs"
                else:
                    common = sorted(set(first.devices) & set(second.devices))
                    if not common:
                        continue
                    shared = "GPU " + ",".join(map(str, common))
                raise EndpointError(
                    f"devices: engines {first.id} ({', '.join(sorted(set(first.serves)))}) and "
                    f"{second.id} ({', '.join(sorted(set(second.serves)))}) would share {shared}: give "
                    "each role its own devices (or share_devices: true on both)"
                )

    def _start_one(self, key: str, engine: Engine, console: Any) -> None:
        if missing := backend_of(engine.backend).missing():
            raise EndpointError(f"{engine.id}: {missing}")
        self._work.mkdir(parents=True, exist_ok=True)
        log_dir = self.log_dir or self._work
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"engine.{engine.id.replace(':', '_').replace('/', '_')}.log"
        engine.log_file = str(log_path)
        log = open(log_path, "ab")  # noqa: SIM115  # closed in stop()
        self._logs.append(log)
        if console is not None:
            console.print(f"[dim]starting engine {engine.id} ({engine.backend}) at {engine.base_url}[/]")
        started = time.perf_counter()
        parent = os.getpid()
        command = [self._materialized(part) for part in engine.command]
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches tapir, which stops the engine in order
            preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent),  # SIGTERM: it may clean up
            env={**os.environ, "PYTHONUNBUFFERED": "1", **_device_env(engine)},
        )
        self._processes[key] = process
        _wait_until_ready(engine, process, log_path, backend_of(engine.backend).start_timeout_s)
        if console is not None:
            console.print(f"[dim]engine {engine.id} ready in {time.perf_counter() - started:.1f}s[/]")

    def _materialized(self, part: str) -> str:
        """The embedded model's placeholders in a command, made real files (once, cached)."""
        if part == EMBEDDED_GGUF:
            return str(embedded_gguf_path(self.cache_dir))
        if part.startswith(f"{EMBEDDED_GGUF}:"):
            return str(embedded_gguf_path(self.cache_dir, part.split(":", 1)[1]))
        if part == EMBEDDED_HF:
            from tapir.serving.embedded_student import materialize_embedded_student

            return str(materialize_embedded_student(self.cache_dir))
        return part

    def stop(self) -> None:
        """Stop every engine this set started (SIGTERM, then SIGKILL); idempotent."""
        _end(list(self._processes.values()))
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._unpublish()
        shutil.rmtree(self._work, ignore_errors=True)

    def release(self, engine: Engine) -> None:
        """Stop one engine this set started (a checkpoint evaluation no longer needs); the others
        keep running. A later ``ensure`` of the same model starts it again."""
        key = next((k for k, e in self.engines.items() if e is engine), None)
        process = self._processes.pop(key, None) if key else None
        _end([process] if process is not None else [])
        if key:
            del self.engines[key]
            if self._registry_file is not None:  # children must not attach to it any more
                self._write_registry()

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values()]

    def __enter__(self) -> EngineSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- sharing with child processes ---------------------------------------------------------

    def _publish(self) -> None:
        if not self.engines:
            return
        self._work.mkdir(parents=True, exist_ok=True)
        if self._registry_file is None:
            self._registry_file = self._work / "registry.json"
            self._previous_env = os.environ.get(REGISTRY_ENV)
        self._write_registry()
        os.environ[REGISTRY_ENV] = str(self._registry_file)

    def _write_registry(self) -> None:
        assert self._registry_file is not None
        entries = {**{k: asdict(e) for k, e in self._attached.items()}}
        running = {k: e for k, e in self.engines.items() if k in self._processes or not e.owned}
        entries.update({k: asdict(e) for k, e in running.items() if backend_of(e.backend).started_by_tapir})
        self._registry_file.write_text(json.dumps(entries), encoding="utf-8")

    def _unpublish(self) -> None:
        if self._registry_file is None:
            return
        if self._previous_env is None:
            os.environ.pop(REGISTRY_ENV, None)
        else:
            os.environ[REGISTRY_ENV] = self._previous_env
        self._registry_file = None


def _end(processes: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM each engine's process group, then SIGKILL whatever is left after ``grace_s``."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _read_registry() -> dict[str, Engine]:
    path = os.environ.get(REGISTRY_ENV)
    if not path or not Path(path).is_file():
        return {}
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    attached = {}
    for key, entry in entries.items():
        entry.update(owned=False, serves=[])
        attached[key] = Engine(**entry)
    return attached


def _wait_until_ready(engine: Engine, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll the engine's model list until it names the served model, or fail with its log's tail."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise EndpointError(
                f"{engine.id}: the {engine.backend} engine exited with status {code} while starting"
                f" ({_last_line(log_path)}; log: {log_path})"
            )
        try:
            response = httpx.get(f"{engine.base_url}/models", timeout=2.0)
            if response.status_code == 200:
                names = [m.get("id") for m in response.json().get("data", [])]
                if not backend_of(engine.backend).announces_model or engine.served_name in names:
                    return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise EndpointError(f"{engine.id}: the engine did not answer within {timeout_s:.0f}s (log: {log_path})")


def _last_line(log_path: Path) -> str:
    try:
        lines = [x for x in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    meaningful = [x for x in lines if "Error" in x or "error" in x] or lines
    return meaningful[-1].strip()[:200] if meaningful else "no output"
