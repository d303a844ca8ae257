"""The rooms stay apart: stages hand over through files (the stage contract), never through each
other's code; user-facing verbs never run test code; chat templates resolve by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tapir.chat_templates import packaged_names, resolve_chat_template
from tapir.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ["tapir", "pipelines", "training", "evaluation"]


def imported_modules(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def test_evaluation_imports_nothing_from_training():
    offenders = {
        path: sorted(n for n in names if n.startswith("tapir.training"))
        for path, names in imported_modules("evaluation").items()
    }
    assert not {p: n for p, n in offenders.items() if n}


def test_no_production_module_and_no_make_verb_uses_the_tests():
    for folder in PRODUCTION:
        for path, names in imported_modules(folder).items():
            assert not [n for n in names if n == "tests" or n.startswith("tests.")], path
    assert "tests." not in (REPO / "Makefile").read_text(encoding="utf-8")


def test_chat_templates_resolve_by_name_or_path(tmp_path):
    assert "tapir_chat" in packaged_names()
    by_name = resolve_chat_template("tapir_chat", "student.chat_template")
    assert by_name.is_file() and "{% generation %}" in by_name.read_text(encoding="utf-8")
    own = tmp_path / "mine.jinja"
    own.write_text("{{ messages }}")
    assert resolve_chat_template(str(own), "student.chat_template") == own
    with pytest.raises(RecipeError, match=r"student.chat_template: file not found.*tapir's: .*tapir_chat"):
        resolve_chat_template("no_such_template", "student.chat_template")
