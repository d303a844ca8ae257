"""Chat templates by name, so a recipe works the same from a checkout and from an install.

tapir ships the templates its recipes use (``tapir_chat``: a plain template for base models
that have none, with ``{% generation %}`` markers around the assistant turn and its EOS so TRL
can mask everything else). A recipe names one of these, or gives the path of its own file.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tapir.errors import RecipeError

DEFAULT = "tapir_chat"
_SUFFIX = ".jinja"


def _packaged_dir() -> Path:
    return Path(str(files("tapir").joinpath("templates")))


def packaged_names() -> list[str]:
    """The names of the chat templates tapir ships."""
    return sorted(p.name.removesuffix(_SUFFIX) for p in _packaged_dir().glob(f"*{_SUFFIX}"))


def packaged_template(name: str = DEFAULT) -> Path:
    """The file of one of tapir's own chat templates."""
    return _packaged_dir() / f"{name.removesuffix(_SUFFIX)}{_SUFFIX}"


def resolve_chat_template(value: str, field: str) -> Path:
    """``value`` as a template file: the user's own file (a path), else one of tapir's by name;
    one error line naming ``field`` when it is neither."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if "/" not in value and packaged_template(value).is_file():
        return packaged_template(value)
    raise RecipeError(
        f"{field}: file not found, and not a chat template tapir ships: {value} "
        f"(tapir's: {', '.join(packaged_names())})"
    )
