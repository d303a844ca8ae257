"""The rooms stay apart: stages hand over through files (the stage contract), never through each
other's code; user-facing verbs never run test code; chat templates resolve by name."""

from __future__ import annotations

import ast
import sys
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


#: Each room and the rooms it may import (docs/development/layout.md). The stages meet only
#: through the rooms they share; the verbs are where they are used together.
MAY_IMPORT = {
    "core": {"core"},
    "serving": {"core"},
    "review": {"core"},
    "publishing": {"core", "review"},
    "pipelines": {"core", "serving", "review", "publishing"},
    "training": {"core", "serving"},
    "evaluation": {"core", "serving"},
    "commands": {
        "core",
        "serving",
        "review",
        "publishing",
        "pipelines",
        "training",
        "evaluation",
        "commands",
    },
}
ROOM_PACKAGES = ("serving", "review", "publishing", "pipelines", "training", "evaluation", "commands")
#: The one module of another room the core reads: backend names and capabilities for the schema.
CORE_MAY_READ = {"tapir.serving.backends"}


def room_of_file(path: str) -> str:
    parts = Path(path).parts
    if parts[0] in ("pipelines", "training", "evaluation"):
        return parts[0]
    if parts[1] == "cli.py":
        return "commands"
    return parts[1] if len(parts) > 2 else "core"


def room_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "tapir" or len(parts) < 2:
        return None
    if parts[1] == "cli":
        return "commands"
    return parts[1] if parts[1] in ROOM_PACKAGES else "core"


def crossings() -> list[str]:
    """Every import that leaves its room for one it may not use."""
    found = []
    for folder in PRODUCTION:
        for path, names in imported_modules(folder).items():
            room = room_of_file(path)
            for name in sorted(names):
                target = room_of_module(name)
                if target is None or target in MAY_IMPORT[room] or target == room:
                    continue
                if room == "core" and name in CORE_MAY_READ:
                    continue
                found.append(f"{path} ({room}) imports {name} ({target})")
    return found


def test_no_room_imports_one_it_may_not():
    assert crossings() == []


def test_the_layer_check_sees_a_stage_importing_another(tmp_path, monkeypatch):
    """The check itself: a stage-to-stage import, a core module importing a stage, and the
    serving room importing a stage are each caught; lazy imports inside functions count."""
    planted = {
        "evaluation/planted.py": "def f():\n    from tapir.training.rounds import run_training\n",
        "tapir/planted.py": "import tapir.pipelines.run\n",
        "tapir/serving/planted.py": "from tapir.evaluation.models import STUDENT\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    for folder in ("pipelines", "training"):
        (tmp_path / folder).mkdir(exist_ok=True)
    assert sorted(crossings()) == [
        "evaluation/planted.py (evaluation) imports tapir.training.rounds (training)",
        "tapir/planted.py (core) imports tapir.pipelines.run (pipelines)",
        "tapir/serving/planted.py (serving) imports tapir.evaluation.models (evaluation)",
    ]


def test_backend_names_are_compared_only_in_the_backend_adapters():
    """``backend == "llamacpp"`` and the like live in tapir/serving/backends.py only."""
    import re

    compared = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](llamacpp|vllm|openai|scripted|transformers)["']""")
    offenders = []
    for folder in PRODUCTION:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "backends.py" and path.parent.name == "serving":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if compared.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_backends_module_imports_nothing_from_tapir():
    names = imported_modules("tapir")[str(Path("tapir/serving/backends.py"))]
    assert not [n for n in names if n.startswith("tapir")]


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
