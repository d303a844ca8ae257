"""A local stand-in for the five huggingface.co endpoints ``tapir push`` reaches through
``huggingface_hub``: whoami, repo creation, README YAML validation, preupload and commit.

The Hub cannot run here, so the tests answer huggingface_hub's real HTTP calls at the network
boundary and keep what arrives: the token each call carried, the repo settings, and every file
of the commit (all as "regular" uploads, inline in the commit's NDJSON, as the Hub does for
small files).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HubState:
    """What the stand-in answers (identity, status) and what it received."""

    identity: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    tokens: set[str] = field(default_factory=set)
    created: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo_id -> path -> bytes
    commits: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _token(self) -> None:
            # Calls without one (huggingface_hub's daily agent-registry fetch) are not ours.
            header = self.headers.get("authorization")
            if header:
                state.tokens.add(header.removeprefix("Bearer "))

        def do_GET(self) -> None:
            self._token()
            if not self.path.startswith("/api/whoami-v2"):
                return self._reply(404, {"error": f"stand-in has no GET {self.path}"})
            if state.status != 200:
                return self._reply(state.status, {"error": "Invalid credentials in Authorization header"})
            return self._reply(200, state.identity)

        def do_POST(self) -> None:
            self._token()
            body = self._body()
            if self.path == "/api/repos/create":
                request = json.loads(body)
                state.created.append(request)
                repo = f"{request['organization']}/{request['name']}"
                kind = "datasets/" if request.get("type") == "dataset" else ""
                return self._reply(200, {"url": f"{state.url}/{kind}{repo}"})
            if self.path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []})
            match = re.fullmatch(
                r"/api/(datasets|models)/([^/]+/[^/]+)/(preupload|commit)/main(\?.*)?", self.path
            )
            if not match:
                return self._reply(404, {"error": f"stand-in has no POST {self.path}"})
            kind = "datasets/" if match.group(1) == "datasets" else ""
            repo, action = match.group(2), match.group(3)
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    },
                )
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(item["value"] for item in lines if item["key"] == "header")
            received = state.files.setdefault(repo, {})
            for item in lines:
                if item["key"] == "file":
                    received[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            state.commits.append({"repo": repo, **header})
            oid = f"{len(state.commits):040x}"
            return self._reply(200, {"commitUrl": f"{state.url}/{kind}{repo}/commit/{oid}", "commitOid": oid})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve_hub() -> Iterator[HubState]:
    """A stand-in Hub on loopback for the duration of the block."""
    state = HubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
