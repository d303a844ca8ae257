"""Which model a round starts from, and the tokenizer checks that must pass before training.

A base student has no chat template, and a template that masks the answer but not its EOS
trains a model that never stops: the loss still looks healthy, so the fault only shows at
inference. These checks refuse such a setup up front, with one line naming the recipe field,
using TRL's own template inspection so we agree with what ``SFTTrainer`` will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapir.chat_templates import resolve_chat_template
from tapir.errors import TrainingError
from tapir.recipe import Recipe
from tapir.serving.embedded import EMBEDDED, chat_template_path
from tapir.serving.student import start_model_name

PROBE = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one."},
]


def template_file(recipe: Recipe) -> Path | None:
    chosen = recipe.training.chat_template or recipe.student.chat_template
    if chosen:
        field = "training.chat_template" if recipe.training.chat_template else "student.chat_template"
        return resolve_chat_template(chosen, field)
    if start_model_name(recipe) == EMBEDDED:
        return chat_template_path()
    return None


def model_unreachable(model: str, what: str, error: BaseException) -> str:
    """One line for a model that cannot be read: a local folder that is not one, or a Hub id the
    Hub cannot serve now (offline, or no such repo)."""
    first = (str(error).splitlines() or [type(error).__name__])[0][:200]
    if Path(model).expanduser().exists():
        return f"training.model: cannot load {what} from {model} ({first})"
    offline = "connect" in first.lower() or "offline" in first.lower()
    why = "the Hub cannot be reached from here (offline)" if offline else first
    return (
        f"training.model: {model!r} is not a local folder and cannot be loaded from the Hugging Face "
        f"Hub: {why}; download it first (`hf download {model}`) or give a local path"
    )


def load_tokenizer(model: str, recipe: Recipe) -> Any:
    """The tokenizer with the chat template training will use, checked (see module docstring)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except OSError as exc:
        raise TrainingError(model_unreachable(model, "a tokenizer", exc)) from None
    template = template_file(recipe)
    field = "training.chat_template"
    if template is not None:
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    elif not tokenizer.chat_template:
        raise TrainingError(
            f"{field}: the tokenizer of {model} has no chat template; give one "
            "(chat_template: tapir_chat suits base models)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_template(tokenizer, recipe.training.assistant_only_loss, field)
    return tokenizer


def check_template(tokenizer: Any, assistant_only_loss: bool, field: str) -> None:
    """Raise unless the template renders, emits the tokenizer's EOS and masks it as trainable."""
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    if tokenizer.eos_token is None:
        raise TrainingError(f"{field}: the tokenizer defines no eos_token, so the student could never stop")
    try:
        rendered = tokenizer.apply_chat_template(PROBE[:2], tokenize=False)
    except Exception as exc:  # jinja errors come in many types
        raise TrainingError(f"{field}: the chat template does not render a conversation ({exc})") from None
    if tokenizer.eos_token not in rendered:
        raise TrainingError(
            f"{field}: the template never writes the tokenizer's EOS token {tokenizer.eos_token!r} "
            "after the answer (template and tokenizer do not match), so the student would not learn to stop"
        )
    if not assistant_only_loss:
        return
    if not has_generation_markers(tokenizer.chat_template):
        raise TrainingError(
            f"{field}: assistant_only_loss needs {{% generation %}} markers around the assistant turn "
            "(see tapir's chat template tapir_chat), or set training.assistant_only_loss=false"
        )
    if not is_chat_template_stop_token_trained(tokenizer):
        raise TrainingError(
            f"{field}: the assistant's EOS lies outside {{% generation %}}...{{% endgeneration %}}, "
            "so it would carry no loss and the student would not learn to stop"
        )


def preflight(model: str, recipe: Recipe) -> None:
    """Every check that can refuse the run, before any round folder is touched: a setting that
    cannot work must not cost the rounds already trained."""
    check_context(model, recipe.training.max_length)
    load_tokenizer(model, recipe)


def check_context(model: str, max_length: int) -> None:
    """Refuse a sequence length beyond the model's context before loading any weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise TrainingError(model_unreachable(model, "a model configuration", exc)) from None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(text_config, "max_position_embeddings", None)
    if context and max_length > context:
        raise TrainingError(
            f"training.max_length: {max_length} exceeds the context of {model} ({context} tokens)"
        )
