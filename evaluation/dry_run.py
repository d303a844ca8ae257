"""``tapir eval --dry-run``: what would be evaluated, with what, and how many calls -- checked,
with no model loaded and nothing downloaded (remote sources are listed, not fetched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapir.benchmark_sources import EMBEDDED, sample_file
from tapir.errors import EvaluationError
from tapir.evaluation.alpaca_eval_bench import check_annotator
from tapir.evaluation.chat_templates import check_templates
from tapir.evaluation.models import resolve_models
from tapir.evaluation.published import published_rows
from tapir.evaluation.serving import answer_backend, answered_by_pipeline_student, planned_engine
from tapir.recipe import Recipe
from tapir.serving.backends import BACKENDS, backend_of
from tapir.serving.engines import EngineSet, engines_table
from tapir.serving.llm_factory import model_id

REMOTE = ("https://", "http://", "hf://")


def _check_source(value: str | None, field: str, console: Console) -> None:
    if value is None:
        console.print(f"  {field}: alpaca_eval's official file (downloaded at run time)")
    elif value == EMBEDDED:
        console.print(f"  {field}: tapir's embedded sample ({sample_file(field)})")
    elif value.startswith(REMOTE):
        console.print(f"  {field}: {value} (downloaded at run time)")
    elif not Path(value).expanduser().exists():
        raise EvaluationError(f"{field}: not found: {value}")
    else:
        console.print(f"  {field}: {value}")


def eval_dry_run(recipe: Recipe, console: Console, only: list[str] | None = None) -> dict[str, Any]:
    settings = recipe.evaluation
    judge = settings.judge or recipe.judge
    models = resolve_models(recipe, only, materialize=False)
    published = published_rows(settings.published, settings.paper_rows)
    console.print(f"[bold]tapir eval --dry-run[/] {recipe.name} (recipe hash {recipe.fingerprint()})")
    console.print(f"judge: {judge.backend} {model_id(judge)}; answers by {settings.backend}")
    chosen = BACKENDS.get(settings.backend)  # None: auto, decided per model below
    if chosen is not None and (line := chosen.install_line()):
        console.print(f"  {line}")
    ae, mt = settings.alpaca_eval, settings.mt_bench
    calls = 0
    if ae.enabled:
        console.print(f"AlpacaEval 2.0: {ae.limit or 805} instructions, annotator {ae.annotator}")
        _check_source(ae.reference, "evaluation.alpaca_eval.reference", console)
        _check_source(ae.difficulty, "evaluation.alpaca_eval.difficulty", console)
        check_annotator(ae)
        calls += ae.limit or 805
    if mt.enabled:
        per_category = mt.per_category or 10
        console.print(f"MT-Bench: {per_category} question(s) per category, 2 turns, fschat single grading")
        for name in ("questions", "judge_prompts", "reference_answers"):
            _check_source(getattr(mt, name), f"evaluation.mt_bench.{name}", console)
        calls += 8 * per_category * 2
    templates = check_templates(recipe, models)
    view = Table(title="models")
    for column in ("name", "kind", "path", "answered by", "chat template", "cache key"):
        view.add_column(column)
    engines = EngineSet.for_recipe(recipe)
    answer_engines: list[dict[str, Any]] = []
    backends = {}
    for model in models:
        backends[model.name] = backend = answer_backend(recipe, model)
        view.add_row(model.name, model.kind, model.path, backend, templates[model.name], model.key[:16])
        if answered_by_pipeline_student(recipe, model, backend):
            engines.ensure(recipe.student, "eval_model", f"eval_answers:{model.name}")
        elif (planned := planned_engine(recipe, model, backend)) is not None:
            answer_engines.append(planned)
    console.print(view)
    console.print(
        f"per model: about {calls} answers and {calls} judge verdicts "
        f"(cached ones are free); {len(published)} published row(s) beside ours"
    )
    console.print(f"results: {recipe.resolved_eval_dir}")
    if judge.paid and not (settings.price_per_million_tokens or judge.price_per_million_tokens):
        console.print(
            "[yellow]warning: the judge is a paid endpoint with no price (evaluation."
            "price_per_million_tokens): what its verdicts cost is unknown[/]"
        )
    if backend_of(judge.backend).served:
        for name in ("alpaca_eval", "mt_bench"):
            if getattr(settings, name).enabled:
                engines.ensure(judge, "judge", f"eval_judge:{name}")
    plan = engines.plan() + answer_engines
    if plan:
        console.print(engines_table(plan))
    return {
        "stage": "eval",
        "recipe": recipe.name,
        "models": [
            {
                "name": m.name,
                "kind": m.kind,
                "path": m.path,
                "answered_by": backends[m.name],
                "chat_template": templates[m.name],
            }
            for m in models
        ],
        "answers_by": settings.backend,
        "engines": plan,
        "estimate": {"answers_per_model": calls, "verdicts_per_model": calls},
        "results": str(recipe.resolved_eval_dir),
    }
