"""``tapir push --model``: a trained checkpoint to the Hugging Face Hub, with a model card.

The card is huggingface_hub's ``ModelCard`` over ``ModelCardData`` (what the Hub reads: base
model, datasets, tags, evaluation results as model-index), with the run's own figures: the
curriculum the model was trained on (rounds, rows, hard share), its training settings and final
loss, and the leaderboard rows ``tapir eval`` wrote for exactly this checkpoint (matched by its
run key, not its name), each with its judge. As the dataset push, ``--dry-run`` writes the
upload folder and stops; otherwise the repo is created (private by default) and the folder is
committed once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from tapir.checkpoint_files import model_folder_problem
from tapir.errors import DataError, RecipeError
from tapir.manifest import scrub
from tapir.publishing.card import TEMPLATES, markdown_table
from tapir.publishing.hub_push import assert_no_secret, upload, write_local_upload
from tapir.recipe import Recipe
from tapir.stage_contract import DataRun, TrainRun, model_key, read_round_manifest, split_order

ROUND_MANIFEST = "tapir_round_manifest.json"
EMBEDDED_BASE = "google/gemma-3-270m"  # the Hub model the embedded GGUF was quantised from
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


def resolve_checkpoint(recipe: Recipe, which: str) -> tuple[Path, dict[str, Any] | None]:
    """The model folder ``which`` names (a round of the recipe's training, or a folder) and its
    round manifest when it has one."""
    if not which.strip():
        raise DataError("--model: empty; name a trained round (1, round_1, warmup) or a model folder")
    name = f"round_{which}" if which.isdigit() else which
    train = TrainRun(recipe.resolved_train_dir)
    folder = train.model_dir(name)
    if not folder.is_dir():
        folder = Path(which).expanduser()
        if not folder.is_dir():
            rounds = sorted(
                (p.parent.name for p in train.root.glob("*/model") if p.is_dir()), key=split_order
            )
            raise DataError(
                f"--model: {which!r} is neither a trained round of {train.root} "
                f"({', '.join(rounds) or 'none trained yet'}) nor a model folder"
            )
    if problem := model_folder_problem(folder):
        raise DataError(f"--model: {problem}; nothing was uploaded")
    manifest = read_round_manifest(folder.parent)
    return folder, manifest.model_dump(mode="json") if manifest else None


def base_model(recipe: Recipe) -> str:
    model = recipe.training.model or recipe.student.model
    return EMBEDDED_BASE if model == "embedded" else model


def checkpoint_key(folder: Path) -> str:
    """The key ``tapir eval`` files this model's results under (a round's run key, else the
    folder's files)."""
    return model_key(str(folder))


def leaderboard_rows(recipe: Recipe, key: str | None) -> list[dict[str, Any]]:
    """``tapir eval``'s leaderboard rows of the checkpoint with run key ``key`` (none when it
    was not evaluated, or was retrained since)."""
    folder = recipe.resolved_eval_dir
    summary_path, table_path = folder / "summary.json", folder / "leaderboard.csv"
    if key is None or not summary_path.is_file() or not table_path.is_file():
        return []
    import pandas as pd

    models = json.loads(summary_path.read_text(encoding="utf-8")).get("models") or {}
    names = {name for name, entry in models.items() if entry.get("key") == key}
    table = pd.read_csv(table_path)
    rows = table[table["model"].isin(names) & (table["source"] == "tapir eval")]
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in rows.to_dict("records")
    ]


def _eval_results(rows: list[dict[str, Any]]) -> list[Any]:
    from huggingface_hub import EvalResult

    results = []
    for row in rows:
        judge = f"judge: {row.get('judge')}"
        for metric, name, value in (
            ("win_rate", "win rate (%)", row.get("win_rate")),
            (
                "length_controlled_winrate",
                "length-controlled win rate (%)",
                row.get("length_controlled_winrate"),
            ),
        ):
            if value is not None:
                results.append(
                    EvalResult(
                        task_type="text-generation",
                        dataset_type="tatsu-lab/alpaca_eval",
                        dataset_name="AlpacaEval 2.0",
                        metric_type=metric,
                        metric_name=name,
                        metric_value=round(float(value), 2),
                        metric_config=judge,
                    )
                )
        if row.get("mt_bench") is not None:
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type="HuggingFaceH4/mt_bench_prompts",
                    dataset_name="MT-Bench",
                    metric_type="mt_bench_score",
                    metric_name="MT-Bench score (1-10)",
                    metric_value=round(float(row["mt_bench"]), 2),
                    metric_config=judge,
                )
            )
    return results


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def render_model_card(
    recipe: Recipe, folder: Path, manifest: dict[str, Any] | None, rows: list[dict[str, Any]]
) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    round_name = (manifest or {}).get("round") or folder.name
    dataset = recipe.hub.repo_id
    base = base_model(recipe)
    data = ModelCardData(
        model_name=f"{recipe.name}-{round_name}",
        base_model=base if _HUB_ID.match(base) else None,
        datasets=[dataset] if dataset else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["tapir", "distillation", "curriculum-learning", "trl", "sft"],
        eval_results=_eval_results(rows) or None,
    )
    summary_path = DataRun(recipe.resolved_output_dir).summary_file
    curriculum = (
        json.loads(summary_path.read_text(encoding="utf-8")).get("curriculum", [])
        if summary_path.is_file()
        else []
    )
    order = ["warmup", *(f"round_{n}" for n in range(1, recipe.curriculum.rounds + 1))]
    trained = order[: order.index(round_name) + 1] if round_name in order else []
    curriculum_rows = [
        [
            r["split"],
            r["rows"],
            r.get("hard", "-"),
            "-" if r.get("hard_share") is None else f"{r['hard_share']:.2f}",
            "yes" if r["split"] in trained else "no",
        ]
        for r in curriculum
    ]
    training = (manifest or {}).get("training") or recipe.training.model_dump(mode="json")
    metrics = (manifest or {}).get("metrics") or {}
    settings = [
        ["epochs", training.get("num_train_epochs")],
        ["max steps", training.get("max_steps") or "-"],
        ["learning rate", training.get("learning_rate")],
        ["scheduler", training.get("lr_scheduler_type")],
        [
            "per-device batch x accumulation",
            f"{training.get('per_device_train_batch_size')} x {training.get('gradient_accumulation_steps')}",
        ],
        ["max length", training.get("max_length")],
        ["LoRA", "yes (merged)" if (training.get("lora") or {}).get("enabled") else "no (full fine-tune)"],
        [
            "steps trained / final loss",
            f"{metrics.get('global_step', '-')} / {_number(metrics.get('final_loss'), 4)}",
        ],
    ]
    if rows:
        board = markdown_table(
            ["model", "judge", "AlpacaEval 2.0 win rate", "LC win rate", "MT-Bench", "judge parse failures"],
            [
                [
                    r["model"],
                    r.get("judge", "-"),
                    f"{_number(r.get('win_rate'))} ± {_number(r.get('standard_error'))}",
                    _number(r.get("length_controlled_winrate")),
                    f"{_number(r.get('mt_bench'))} ± {_number(r.get('mt_bench_standard_error'))}",
                    int(r.get("judge_parse_failures", 0)),
                ]
                for r in rows
            ],
        )
    else:
        board = "This checkpoint has not been evaluated (run `tapir eval`); no scores are claimed."
    link = (
        f"[{dataset}](https://huggingface.co/datasets/{dataset})"
        if dataset
        else "the local data run " + f"`{recipe.resolved_output_dir}`"
    )
    data_table = (
        markdown_table(["split", "rows", "hard", "hard share", "in this model"], curriculum_rows)
        if curriculum_rows
        else "The data run's summary was not found next to the recipe."
    )
    card = ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / "model_card.md.jinja"),
        name=recipe.name,
        round_name=round_name,
        base=base,
        data_link=link,
        teacher=recipe.teacher.model,
        judge=recipe.judge.model,
        data_table=data_table,
        settings_table=markdown_table(["setting", "value"], settings),
        board=board,
        recipe_hash=recipe.fingerprint(),
        seed=recipe.seed,
        round_manifest=ROUND_MANIFEST,
    )
    return str(card) + "\n"


def build_model_upload(recipe: Recipe, which: str, target: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Write the model folder, its card and round manifest into ``target``; returns the source
    folder and the leaderboard rows the card shows."""
    folder, manifest = resolve_checkpoint(recipe, which)
    rows = leaderboard_rows(recipe, checkpoint_key(folder))
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            shutil.copy2(path, target / path.name)
    if manifest is not None:
        (target / ROUND_MANIFEST).write_text(scrub(json.dumps(manifest, indent=2)), encoding="utf-8")
    (target / "README.md").write_text(
        scrub(render_model_card(recipe, folder, manifest, rows)), encoding="utf-8"
    )
    assert_no_secret(target)
    return folder, rows


def push_model(
    recipe: Recipe,
    console: Console,
    which: str,
    repo_id: str | None = None,
    dry_run: bool = False,
    to: str | None = None,
    private: bool | None = None,
) -> Path | str:
    """Push (or with ``dry_run`` write locally) a trained checkpoint; returns the folder or commit URL."""
    repo_id = repo_id or recipe.hub.model_repo_id
    private = recipe.hub.private if private is None else private
    if dry_run:
        label = f"round_{which}" if which.isdigit() else Path(which).name
        folder = (
            Path(to) if to else recipe.resolved_hub_dir.with_name(f"{recipe.resolved_hub_dir.name}-{label}")
        )
        source, rows = write_local_upload(
            folder, "--to" if to else "hub.output_dir", lambda at: build_model_upload(recipe, which, at)
        )
        console.print(
            f"[bold]dry run[/]: wrote what would go to {repo_id or '(hub.model_repo_id not set)'} "
            f"({'private' if private else 'public'}) into {folder}: {source} with its card "
            f"({len(rows)} leaderboard row(s))"
        )
        return folder
    if not repo_id:
        raise RecipeError("hub.model_repo_id: not set (give --repo-id org/name or set hub.model_repo_id)")
    (source, _), url, user = upload(
        recipe,
        repo_id,
        "model",
        private,
        lambda at: build_model_upload(recipe, which, at),
        lambda built: f"tapir push --model: {recipe.name} ({built[0].parent.name})",
    )
    console.print(f"[green]pushed[/] {source} to {repo_id} as {user} ({url})")
    return url
