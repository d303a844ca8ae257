"""Runs many `tapir` command lines in one process and reports how each one ended.

A bad-input corpus of a hundred and more cases would otherwise pay a Python start-up (and the
imports of distilabel, datasets and torch) per case. Each case runs ``tapir.cli.main`` as the
console script does, with its output captured; what comes back per case is the exit status,
the captured stderr and stdout, whether an exception escaped (a traceback), and whether the
folders the case must not touch are byte-for-byte as before.

    python -m tests.cli_cases cases.json results.json
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

from tapir import cli


def tree_hash(folder: str) -> str:
    """One hash over every file's path and bytes under ``folder`` (absent: "absent")."""
    root = Path(folder)
    if not root.exists():
        return "absent"
    if root.is_file():
        return hashlib.sha256(root.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_case(case: dict) -> dict:
    before = {folder: tree_hash(folder) for folder in case.get("intact", [])}
    saved = {name: os.environ.get(name) for name in case.get("env", {})}
    for name, value in case.get("env", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(case["argv"])
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # what the console script would show as a traceback
                code = None
                escaped = traceback.format_exc()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {
        "code": code,
        "stderr": err.getvalue(),
        "stdout": out.getvalue()[-3000:],
        "traceback": escaped,
        "intact": {folder: tree_hash(folder) == digest for folder, digest in before.items()},
    }


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    results = {case["id"]: run_case(case) for case in cases}
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
