"""Manifests: what made a file (recipe hash, library versions, model ids, seeds).

Each stage writes one next to its output and the next stage reads it. Nothing secret goes in:
recipes name the environment variable of an API key, never the key, and we scrub anything
that looks like a token before writing, as a second line of defence.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = [
    "tapir-distill",
    "distilabel",
    "datasets",
    "transformers",
    "trl",
    "torch",
    "llama_cpp_python",
    "huggingface_hub",
    "pydantic",
    "alpaca-eval",
    "fschat",
    "argilla",
]

_SECRET_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"sk-[A-Za-z0-9_\-]{16,}"),
]
#: Credentials by where they stand rather than their shape, scrubbed wherever text is written
#: (the group before the secret is kept): a URL's user-info, a key-like query parameter, an
#: ``Authorization: Bearer …`` value, a key-like header or option printed as ``name: value``.
_SECRET_CONTEXTS = [
    re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://)[^/\s:@'\"]*:[^/\s@'\"]+(?=@)"),
    re.compile(
        r"(?i)([?&#](?:[a-z0-9_\-]*api[_\-]?key|apikey|key|code|sig|signature|token|access_token|"
        r"id_token|refresh_token|auth|password|secret|x-amz-[a-z\-]+|x-goog-[a-z\-]+)=)[^&#\s'\"]+"
    ),
    re.compile(r"(?i)(\bbearer\s+)(?=[A-Za-z0-9._~+/=\-]*[0-9])[A-Za-z0-9._~+/=\-]{16,}"),
    re.compile(  # quoted values only: "api_key: holds a credential" in a message is prose
        r"(?i)([\"']?[a-z0-9_\-]*(?:api[_\-]?key|subscription[_\-]key|password|secret|authorization|"
        r"cookie|access[_\-]token|auth[_\-]token)[\"']?\s*[:=]\s*[\"'])(?!\*\*\*)[^\s'\"]{4,}(?=[\"'])"
    ),
]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Variables a recipe names as holding a credential (``api_key_env``, ``token_env``), whatever
# they are called: their values are scrubbed too.
_NAMED_SECRETS: set[str] = set()


def treat_as_secret(*env_names: str) -> None:
    """Scrub the values of these environment variables from everything tapir prints or writes."""
    _NAMED_SECRETS.update(name for name in env_names if name)


def secret_values() -> list[str]:
    """Values of environment variables that hold credentials, to scrub from output and artifacts:
    those the recipe names, and any whose name looks like one (longest first, so a key that
    contains another is replaced whole)."""
    names = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    values = {v for k, v in os.environ.items() if any(n in k.upper() for n in names) and len(v) >= 8}
    values.update(v for k in _NAMED_SECRETS if len(v := os.environ.get(k, "")) >= 4)
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("***", text)
    for pattern in _SECRET_CONTEXTS:
        text = pattern.sub(r"\1***", text)
    return text


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` is shaped like a key or token (``sk-…``, ``hf_…``, ``Bearer …``)."""
    return any(p.search(text) for p in _SECRET_PATTERNS) or bool(_SECRET_CONTEXTS[2].search(text))


def error_line(error: BaseException) -> str:
    """An exception as one line of a user-facing error: its first line (else its type), scrubbed,
    at most 300 characters."""
    return scrub((str(error).splitlines() or [type(error).__name__])[0])[:300]


def contains_secret(blob: bytes) -> bool:
    """Whether ``blob`` holds a credential from the environment or a token-shaped string."""
    if any(value.encode() in blob for value in secret_values()):
        return True
    text = blob.decode("latin-1")
    # shapes only: the contexts would also match a dataset's code answers (``password = "…"``)
    return any(pattern.search(text) for pattern in _SECRET_PATTERNS)


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, scrubbed of credentials, replaced in one rename."""
    from tapir.staging import atomic_file

    with atomic_file(path) as partial:
        partial.write_text(
            scrub(json.dumps(data, indent=2, sort_keys=False, default=str)) + "\n", encoding="utf-8"
        )


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
