"""Which models an evaluation covers, and what makes each one the same model next time.

``rounds`` expands to every trained round of the recipe (in curriculum order), ``curriculum``
to the same without the warmup checkpoint (a few rows of training: an evaluation's cost for
little to read), ``student`` to the model training starts from; anything else is a model folder
or a Hub id. A model's key -- the tapir run key of a round, else the folder's config and weight
files, else the Hub id -- addresses the generation cache, so an unchanged checkpoint is never asked twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tapir.checkpoint_files import damaged_weights, model_folder_problem
from tapir.errors import EvaluationError
from tapir.recipe import Recipe
from tapir.stage_contract import (
    CHECKPOINT_ID,
    MANIFEST,
    WARMUP,
    TrainRun,
    curve_position,
    is_curriculum_split,
    model_key,
    read_round_manifest,
)

ROUNDS = "rounds"
CURRICULUM = "curriculum"  # the trained rounds after the warmup
_NAMED = re.compile(r"^[A-Za-z0-9_.-]+=")
STUDENT = "student"


@dataclass(frozen=True)
class EvalModel:
    name: str
    path: str
    key: str
    kind: str  # "round", "student" or "baseline"
    stage: int | None = None  # position on the round curve: student 0, warmup 1, round_r r+1


def _on_the_hub_or_cached(repo_id: str) -> bool:
    """Whether a Hub model id can be loaded: it is in the local Hub cache, or the Hub answers
    (a two-second connection, not the loader's minute of retries when the machine is offline)."""
    import os
    import socket
    from urllib.parse import urlsplit

    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return True
    except Exception:  # an id the Hub would refuse: let its own error say so if online
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return False
    return True


def trained_rounds(recipe: Recipe) -> list[EvalModel]:
    """Every finished round of the recipe's training, from the rounds' manifests (a round still
    training has none yet)."""
    found = []
    train = TrainRun(recipe.resolved_train_dir)
    for path in sorted(train.root.glob(f"*/{MANIFEST}")):
        manifest = read_round_manifest(path.parent)
        model = train.model_dir(manifest.round)
        if not (model / CHECKPOINT_ID).is_file():
            continue
        stage = curve_position(manifest.round)
        found.append(EvalModel(manifest.round, str(model), model_key(str(model)), "round", stage))
    return sorted(found, key=lambda m: (m.stage is None, m.stage or 0, m.name))


def _named(entry: str, kind: str, rounds: list[EvalModel], train_dir: Path, check_hub: bool) -> EvalModel:
    """A folder or Hub id; ``name=path`` files it under ``name`` (two arms' ``round_3`` folders)."""
    label, _, path = entry.partition("=") if _NAMED.match(entry) else ("", "", entry)
    folder = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~"))
    if looks_local and not folder.is_dir():
        raise EvaluationError(f"evaluation.models: model folder not found: {path}")
    if not folder.is_dir() and is_curriculum_split(path):
        trained = ", ".join(r.name for r in rounds) or "none"
        raise EvaluationError(
            f"evaluation.models: {path} is not a trained round of {train_dir} (trained: {trained}); "
            "run `make train`, or name a model folder"
        )
    if check_hub and not folder.is_dir() and not _on_the_hub_or_cached(path):
        raise EvaluationError(
            f"evaluation.models: {path} is neither a local folder nor a trained round, and the Hub "
            "cannot be reached (offline) nor has it in its local cache"
        )
    name = folder.name if folder.is_dir() else path.replace("/", "--")
    if folder.name == "model" and (folder / CHECKPOINT_ID).is_file():
        name = folder.parent.name
    return EvalModel(label or name, path, model_key(path), kind)


def resolve_models(
    recipe: Recipe, only: list[str] | None = None, materialize: bool = True
) -> list[EvalModel]:
    """The recipe's models and baselines (or ``only``: names, ``rounds``, ``curriculum``,
    ``student``, paths).
    ``materialize=False`` (dry runs) names the student without converting the embedded GGUF."""
    wanted = only if only else [*recipe.evaluation.models, *recipe.evaluation.baselines]
    baselines = set(recipe.evaluation.baselines) if not only else set()
    rounds = trained_rounds(recipe)
    chosen: list[EvalModel] = []
    for entry in wanted:
        if not str(entry).strip():
            raise EvaluationError(
                "evaluation.models: an empty model name (give a round, 'student', a folder)"
            )
        if entry == ROUNDS:
            chosen += rounds
        elif entry == CURRICULUM:
            chosen += [r for r in rounds if r.name != WARMUP]
        elif entry == STUDENT:
            from tapir.serving.student import base_model, start_model_name

            path = base_model(recipe) if materialize else start_model_name(recipe)
            chosen.append(EvalModel(STUDENT, path, model_key(path), STUDENT, 0))
        elif any(r.name == entry for r in rounds):
            chosen += [r for r in rounds if r.name == entry]
        else:
            kind = "baseline" if entry in baselines else "model"
            chosen.append(_named(entry, kind, rounds, recipe.resolved_train_dir, check_hub=materialize))
    unique: dict[str, EvalModel] = {}
    for model in chosen:
        if model.name in unique and unique[model.name].path != model.path:
            raise EvaluationError(
                f"evaluation.models: two models are named {model.name!r} ({unique[model.name].path}, "
                f"{model.path}); results are filed by name, so rename one folder"
            )
        unique.setdefault(model.name, model)
    for model in unique.values():
        folder = Path(model.path).expanduser()
        # a transformers folder is whole (config, weights, shards); any other folder's weights intact
        check = model_folder_problem if (folder / "config.json").is_file() else damaged_weights
        damaged = check(folder) if folder.is_dir() else None
        if damaged:
            raise EvaluationError(f"evaluation.models: {model.name}: {damaged}; retrain it or remove it")
    if not unique:
        raise EvaluationError(
            f"evaluation.models: nothing to evaluate (no trained rounds in {recipe.resolved_train_dir}; "
            "run `make train`, or add 'student' or a model folder)"
        )
    return list(unique.values())
