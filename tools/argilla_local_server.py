"""A real Argilla server on this machine, from packages only (no Docker): for the tests, and for
``make argilla-server`` on a laptop. Development tooling: not part of the installed package.

Argilla 2.8 is a FastAPI app (``argilla-server`` on PyPI) that needs a database, a search engine
and Redis for its background jobs. Here they are SQLite, ``osmem-server`` (PyPI: an in-memory
OpenSearch-compatible server binary) and Debian's ``redis-server``. argilla-server pins
pydantic~=2.9, fastapi~=0.115 and httpx~=0.27, which clash with our stack, so it lives in its own
venv (``make argilla-env`` builds ``.venv-argilla``); it is a separate process anyway. osmem runs
no painless scripts, so the server and worker start through ``tools/argilla_osmem_server.py``.

    python tools/argilla_local_server.py     # serve on http://127.0.0.1:6900 until Ctrl-C
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

# The separate venv `make argilla-env` builds in the project folder (another: $TAPIR_ARGILLA_VENV).
VENV = Path(os.environ.get("TAPIR_ARGILLA_VENV", ".venv-argilla")).absolute()
PYTHON = VENV / "bin" / "python"
# argilla-server's CLI with the three script updates osmem cannot run done in Python (see there).
ON_OSMEM = Path(__file__).with_name("argilla_osmem_server.py")
LOCAL_DEFAULT_KEY = "argilla.apikey"  # Argilla's own quickstart convention for local servers
WORKSPACE = "argilla"


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str
    workspace: str
    reviewer_key: str | None  # a second user (annotator) for multi-reviewer checks


def unavailable() -> str | None:
    """Why a local server cannot start here, or None."""
    if not PYTHON.is_file():
        return f"no {VENV.name}/ (run `make argilla-env`)"
    if shutil.which("redis-server") is None:
        return "redis-server not on PATH (Debian: apt-get install redis-server)"
    if not _osmem_binary().is_file():
        return "osmem-server binary missing from .venv-argilla"
    return None


def _osmem_binary() -> Path:
    found = sorted(VENV.glob("lib/python*/site-packages/osmem_server/bin/osmem-server"))
    return found[0] if found else VENV / "missing-osmem-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, seconds: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {seconds:.0f}s; see {log}")


def _start(
    stack: ExitStack, args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    handle = stack.enter_context(log.open("w"))
    # stdin stays a pipe: osmem-server exits when it closes, so nothing outlives the tests.
    process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    stack.callback(stop)
    return process


@contextmanager
def serve(workdir: Path, port: int | None = None, api_key: str = LOCAL_DEFAULT_KEY) -> Iterator[Server]:
    """Redis + osmem + argilla-server (+ its rq worker) on loopback; everything stops on exit."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"cannot start a local Argilla server: {reason}")
    workdir.mkdir(parents=True, exist_ok=True)
    redis_port, search_port, port = _free_port(), _free_port(), port or _free_port()
    env = {
        **os.environ,
        "ARGILLA_HOME_PATH": str(workdir / "home"),
        "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'argilla.db'}",
        "ARGILLA_SEARCH_ENGINE": "opensearch",
        "ARGILLA_ELASTICSEARCH": f"http://127.0.0.1:{search_port}",
        "ARGILLA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
    }
    with ExitStack() as stack:
        redis = _start(
            stack,
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            workdir / "redis.log",
        )
        search = _start(
            stack, [str(_osmem_binary()), "-addr", f"127.0.0.1:{search_port}"], workdir / "osmem.log"
        )
        _wait_for(f"http://127.0.0.1:{search_port}/", 30, search, workdir / "osmem.log")
        if redis.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {workdir / 'redis.log'}")

        def manage(*args: str) -> None:
            subprocess.run(
                [str(PYTHON), "-m", "argilla_server", "database", *args],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        def create_user(name: str, role: str, key: str) -> None:
            manage(
                "users", "create", "--username", name, "--password", f"tapir-{name}", "--role", role,
                "--api-key", key, "--first-name", name.title(), "--workspace", WORKSPACE,
            )  # fmt: skip

        manage("migrate")
        create_user("owner", "owner", api_key)
        reviewer_key = f"{api_key}.reviewer"
        create_user("reviewer", "annotator", reviewer_key)
        server = _start(
            stack,
            [str(PYTHON), str(ON_OSMEM), "start", "--host", "127.0.0.1", "--port", str(port)],
            workdir / "server.log",
            env,
        )
        _start(stack, [str(PYTHON), str(ON_OSMEM), "worker"], workdir / "worker.log", env)
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"{url}/api/_status", 120, server, workdir / "server.log")
        yield Server(url=url, api_key=api_key, workspace=WORKSPACE, reviewer_key=reviewer_key)


def main() -> None:
    key = os.environ.get("ARGILLA_API_KEY") or LOCAL_DEFAULT_KEY
    where = (
        "$ARGILLA_API_KEY"
        if os.environ.get("ARGILLA_API_KEY")
        else f"the local default {LOCAL_DEFAULT_KEY!r}"
    )
    workdir = Path(".cache", "argilla-server").absolute()
    shutil.rmtree(workdir, ignore_errors=True)
    # `kill` as well as Ctrl-C stops redis, osmem, the server and its worker with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with serve(workdir, port=int(os.environ.get("ARGILLA_PORT", "6900")), api_key=key) as server:
            print(
                f"Argilla {server.url} (workspace {server.workspace!r}; owner key: {where}); Ctrl-C stops it"
            )
            print("  web UI logins: owner / tapir-owner, reviewer / tapir-reviewer (annotator)")
            print(f"  export ARGILLA_API_URL={server.url}")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:
        print(f"argilla-server: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
