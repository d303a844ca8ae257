"""Prompt templates are files (``pipelines/templates/<name>.jinja2``) written for tapir.

A recipe may also name its own template file by path. Tasks keep the template *text* as a
field, so editing a prompt changes the step's distilabel signature and invalidates exactly the
cached results that prompt produced.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, StrictUndefined, Template

from tapir.errors import RecipeError

_ENV = Environment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


def template_dir() -> Path:
    return Path(str(files("tapir.pipelines").joinpath("templates")))


def template_text(name_or_path: str, field: str = "template") -> str:
    """The Jinja source of a packaged template name or of a template file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".jinja", ".jinja2", ".j2") and candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    packaged = template_dir() / f"{name_or_path}.jinja2"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    known = sorted(p.stem for p in template_dir().glob("*.jinja2"))
    raise RecipeError(f"{field}: no template {name_or_path!r} (packaged: {', '.join(known)}; or a file path)")


@lru_cache(maxsize=64)
def compile_template(text: str) -> Template:
    return _ENV.from_string(text)


def render(text: str, **values: object) -> str:
    return compile_template(text).render(**values).strip()


def user_prompt(instruction: str, input_text: str | None = None) -> str:
    """The student-facing prompt for an instruction (also the user turn of training data)."""
    return render(template_text("respond"), instruction=instruction, input=input_text or "")
