"""Which chat template renders each evaluated model's prompts, decided before anything loads.

A model is asked in the chat format it knows: the one saved with its tokenizer (a trained round
carries the template it was trained with; a chat baseline carries its own). The untrained
student is asked in the recipe's ``student.chat_template`` when it sets one (the format the data
pass asked it in and training teaches), else its tokenizer's. A model with neither is refused
at plan time, whatever serves it: vLLM would refuse each request, and tapir never guesses a
template from a model's name.
"""

from __future__ import annotations

import json
from pathlib import Path

from tapir.errors import EvaluationError
from tapir.evaluation.models import STUDENT, EvalModel
from tapir.recipe import Recipe
from tapir.serving.embedded import EMBEDDED

#: Where transformers keeps a saved template: its own file (transformers >= 4.43) or the config.
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


def student_template(recipe: Recipe, model: EvalModel) -> Path | None:
    """The recipe's template for the untrained student, as a file (None: the tokenizer's)."""
    from tapir.serving.engines import resolved_template

    if model.kind != STUDENT:
        return None
    chosen = recipe.student.chat_template or recipe.student.model == EMBEDDED
    return resolved_template(recipe.student) if chosen else None


def template_source(recipe: Recipe, model: EvalModel, fetch: bool = False) -> str:
    """Where ``model``'s template comes from (for the plan); EvaluationError when it has none.
    A Hub model neither cached nor fetched (``fetch``: a real run, online) is checked at load."""
    if (chosen := student_template(recipe, model)) is not None:
        return f"student.chat_template ({chosen.name})"
    saved = _saved_template(model.path, fetch)
    if saved is None:
        return "the tokenizer's (checked when it loads: not in the local Hub cache)"
    if not saved:
        hint = " (or set student.chat_template)" if model.kind == STUDENT else ""
        raise EvaluationError(
            f"evaluation.models: {model.name} ({model.path}) has no chat template saved with its "
            f"tokenizer{hint}; tapir never guesses one"
        )
    return "its tokenizer's"


def check_templates(recipe: Recipe, models: list[EvalModel], fetch: bool = False) -> dict[str, str]:
    return {model.name: template_source(recipe, model, fetch) for model in models}


def _saved_template(path: str, fetch: bool) -> bool | None:
    """Whether the tokenizer files at ``path`` (a folder or Hub id) hold a template; None when
    they cannot be read here."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return any(_holds_template(folder / name) for name in _TEMPLATE_FILES)
    files = [_hub_file(path, name, fetch) for name in _TEMPLATE_FILES]
    if any(f is not None and _holds_template(f) for f in files):
        return True
    return False if files[-1] is not None else None  # the config read, and no template anywhere


def _hub_file(repo_id: str, name: str, fetch: bool) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
        return Path(hf_hub_download(repo_id, name)) if fetch else None
    except Exception:  # offline, gated, not there: the loader says why when it runs
        return None


def _holds_template(file: Path) -> bool:
    if not file.is_file():
        return False
    if file.name != "tokenizer_config.json":
        return bool(file.read_text(encoding="utf-8").strip())
    try:
        return bool(json.loads(file.read_text(encoding="utf-8")).get("chat_template"))
    except ValueError:
        return False
