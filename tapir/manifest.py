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
    return text


def error_line(error: BaseException) -> str:
    """An exception as one line of a user-facing error: its first line (else its type), scrubbed,
    at most 300 characters."""
    return scrub((str(error).splitlines() or [type(error).__name__])[0])[:300]


def contains_secret(blob: bytes) -> bool:
    """Whether ``blob`` holds a credential from the environment or a token-shaped string."""
    if any(value.encode() in blob for value in secret_values()):
        return True
    text = blob.decode("latin-1")
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
