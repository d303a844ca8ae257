"""``tapir eval``: every model answers both benchmarks, one judge grades, one leaderboard.

Order of work: check everything that can be wrong (benchmark files, models, judge) before any
model is loaded; then per model generate (cached), judge (cached) and score; then the
leaderboard, plots, HTML page and a summary with the judge's health for every result.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tapir.errors import EvaluationError
from tapir.evaluation import alpaca_eval_bench, html_report, leaderboard, mt_bench_bench, plots
from tapir.evaluation.chat_templates import check_templates, student_template
from tapir.evaluation.generation import CachedGenerator, EngineGenerator, TransformersGenerator
from tapir.evaluation.judging import build_judges, usage_summary
from tapir.evaluation.models import EvalModel, resolve_models
from tapir.evaluation.published import published_rows
from tapir.evaluation.serving import answer_backend, served_spec
from tapir.manifest import library_versions, now_utc, write_json
from tapir.recipe import Recipe
from tapir.serving.backends import backend_of
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import Constraint, LLMContext, choice_constraint, model_id, score_constraint
from tapir.stage_contract import EvalManifest, header, write_manifest
from tapir.staging import claim_output, writing_into

NOTE = (
    "Published rows were judged by GPT-4 Turbo (alpaca_eval's annotator); tapir rows by the judge "
    "named in their row. Compare rows with the same judge."
)


def _engine(recipe: Recipe, model: EvalModel, backend: str, context: LLMContext, on_batch):
    """What answers for ``model``: a served engine (llama.cpp, vLLM) or batched transformers."""
    settings = recipe.evaluation
    if backend_of(backend).served:
        spec = served_spec(recipe, model, backend)
        return EngineGenerator(spec, context, model.name, on_batch=on_batch)
    template = student_template(recipe, model)
    return TransformersGenerator(
        model.path,
        settings.batch_size,
        settings.dtype,
        settings.backend_options,
        on_batch=on_batch,
        chat_template=template.read_text(encoding="utf-8") if template else None,
    )


def fresh_usage_dir(folder: Path) -> Path:
    """Usage records count this run's judge calls only (cached verdicts cost nothing)."""
    if folder.is_dir():
        shutil.rmtree(folder)
    return folder


def run_eval(recipe: Recipe, console: Console, only: list[str] | None = None) -> Path:
    settings = recipe.evaluation
    if not settings.alpaca_eval.enabled and not settings.mt_bench.enabled:
        raise EvaluationError("evaluation: both alpaca_eval and mt_bench are disabled")
    started = time.perf_counter()
    # Everything that can be wrong is found before any model loads.
    reference = (
        alpaca_eval_bench.load_reference(settings.alpaca_eval, recipe.cache_dir)
        if settings.alpaca_eval.enabled
        else None
    )
    mt_data = (
        mt_bench_bench.MTBenchData(settings.mt_bench, recipe.cache_dir) if settings.mt_bench.enabled else None
    )
    published = published_rows(settings.published, settings.paper_rows)
    alpaca_eval_bench.check_annotator(settings.alpaca_eval)
    difficulty = alpaca_eval_bench.difficulty_source(settings.alpaca_eval)
    if difficulty and not Path(difficulty).expanduser().exists():
        raise EvaluationError(f"evaluation.alpaca_eval.difficulty: not found: {difficulty}")
    models = resolve_models(recipe, only)
    check_templates(recipe, models, fetch=True)  # every model has a chat template to be asked in
    claim_output(recipe.resolved_eval_dir, "eval", "evaluation.output_dir")
    judge_spec = settings.judge or recipe.judge
    judge_name = model_id(judge_spec)
    judge_label = judge_name
    if settings.alpaca_eval.annotator != "judge":
        judge_label = f"AlpacaEval: {settings.alpaca_eval.annotator}; MT-Bench: {judge_name}"
    console.print(
        f"[bold]tapir eval[/] {recipe.name}: {len(models)} model(s) "
        f"({', '.join(m.name for m in models)}); judge {judge_name}; "
        f"AlpacaEval {len(reference) if reference is not None else 0} instructions, "
        f"MT-Bench {len(mt_data.questions) if mt_data else 0} questions"
    )

    # usage_dir is set per model and benchmark below (fresh_usage_dir), so none here
    engines = EngineSet.for_recipe(recipe, recipe.resolved_eval_dir / "logs")
    context = LLMContext(cache_dir=Path(recipe.cache_dir), seed=recipe.seed, engines=engines)
    with writing_into(recipe.resolved_eval_dir, "eval"), engines:
        return _evaluate(
            recipe, console, context, models, reference, mt_data, published, judge_label, started
        )


def _evaluate(recipe, console, context, models, reference, mt_data, published, judge_label, started) -> Path:
    """Generate, judge and score every model, then the leaderboard, plots, page and summary."""
    settings = recipe.evaluation
    out_dir = recipe.resolved_eval_dir
    judge_spec = settings.judge or recipe.judge
    judge_name = model_id(judge_spec)
    results: dict[str, dict[str, Any]] = {}
    rows = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=1)

        def advance(n: int) -> None:
            progress.advance(task, n)

        def phase(description: str, total: int) -> None:
            progress.reset(task, total=total, description=description)

        budgets: dict[str, tuple[int, Constraint | None]] = {}
        if reference is not None and settings.alpaca_eval.annotator == "judge":
            budgets["alpaca_eval"] = (
                settings.alpaca_eval.judge_max_new_tokens,
                choice_constraint(["m", "M"]),
            )
        if mt_data is not None:
            budgets["mt_bench"] = (settings.mt_bench.judge_max_new_tokens, score_constraint(1, 10))
        judges = build_judges(
            judge_spec,
            context,
            budgets,
            constrain=settings.constrain_judge,
            batch_size=settings.judge_batch_size,
            retries=settings.judge_retries,
            on_batch=advance,
            expected={"mt_bench"} if recipe.mt_bench_scoring == "expected" else set(),
            top_logprobs=recipe.judging.top_logprobs,
        )
        context.engine_set().start()
        alpaca_judge, mt_judge = judges.get("alpaca_eval"), judges.get("mt_bench")
        for model in models:
            backend = answer_backend(recipe, model)
            quantization = recipe.training.rescore_quantization
            serving = f"{backend}:{quantization}" if backend_of(backend).runs_gguf else backend
            generator = CachedGenerator(
                f"{model.key}|{serving}",
                lambda m=model, b=backend: _engine(recipe, m, b, context, advance),
                Path(recipe.cache_dir),
                advance,
            )
            model_results: dict[str, Any] = {}
            model_dir = out_dir / model.name
            if reference is not None:
                usage = fresh_usage_dir(model_dir / "alpaca_eval" / "usage")
                if alpaca_judge is not None:
                    alpaca_judge.llm.usage_dir = str(usage)
                phase(f"{model.name}: AlpacaEval answers", len(reference))
                outputs_done = alpaca_eval_bench.generate(
                    reference, generator, settings.alpaca_eval, recipe.seed, model.name
                )
                phase(f"{model.name}: AlpacaEval verdicts", len(reference))
                result = alpaca_eval_bench.score_outputs(
                    model.name,
                    outputs_done,
                    alpaca_judge,
                    settings.alpaca_eval,
                    reference,
                    model_dir / "alpaca_eval",
                    recipe.seed,
                    recipe.cache_dir,
                )
                result["judge_health"]["usage"] = usage_summary(usage, settings.price_per_million_tokens)
                model_results["alpaca_eval"] = result
            if mt_data is not None and mt_judge is not None:
                usage = fresh_usage_dir(model_dir / "mt_bench" / "usage")
                mt_judge.llm.usage_dir = str(usage)
                phase(f"{model.name}: MT-Bench answers", 2 * len(mt_data.questions))
                result = mt_bench_bench.evaluate(
                    model.name,
                    generator,
                    mt_judge,
                    settings.mt_bench,
                    mt_data,
                    model_dir / "mt_bench",
                    recipe.seed,
                    on_judging=lambda n, name=model.name: phase(f"{name}: MT-Bench judgments", n),
                )
                result["judge_health"]["usage"] = usage_summary(usage, settings.price_per_million_tokens)
                model_results["mt_bench"] = result
            model_results["generation"] = {
                "backend": serving,
                "generated": generator.generated,
                "from_cache": generator.cached,
            }
            results[model.name] = model_results
            rows.append(
                leaderboard.model_row(model.name, model.kind, model.stage, judge_label, model_results)
            )
            generator.close()  # this checkpoint's engine; the judge's keeps running
            del generator
            gc.collect()
        phase("done", 1)
        advance(1)

    table = leaderboard.build(rows + published)
    out_dir.mkdir(parents=True, exist_ok=True)
    leaderboard.write(table, out_dir)
    drawn = plots.draw_all(table, out_dir / "plots")
    page = write_page(out_dir, f"tapir eval: {recipe.name}", table, results, drawn)
    evaluated = {m.name: {"path": m.path, "key": m.key, "kind": m.kind} for m in models}
    summary = {
        "recipe": recipe.name,
        "recipe_hash": recipe.fingerprint(),
        "finished": now_utc(),
        "seconds": round(time.perf_counter() - started, 1),
        "judge": judge_name,
        "models": evaluated,
        "results": results,
        "libraries": library_versions(),
    }
    write_json(out_dir / "summary.json", summary)
    write_manifest(out_dir, EvalManifest(**header("eval", recipe, None), judge=judge_name, models=evaluated))
    _print(console, table, results, out_dir, page)
    return out_dir


def write_page(
    out_dir: Path,
    title: str,
    table: Any,
    results: dict[str, Any],
    drawn: list[Path],
    sections: list[tuple[str, str]] | None = None,
) -> Path:
    """``report.html``: the leaderboard, per-category scores, plots, judge health (and sections
    a caller adds, e.g. ``tapir ablate``'s)."""
    health = {
        name: {k: v["judge_health"] for k, v in r.items() if "judge_health" in v}
        for name, r in results.items()
    }
    return html_report.write(out_dir / "report.html", title, table, health, drawn, [NOTE], sections or [])


def _print(console: Console, table, results: dict[str, Any], out_dir: Path, page: Path) -> None:
    view = Table(title="Leaderboard")
    for column in ("model", "kind", "AE2 win", "± s.e.", "AE2 LC", "MT-Bench", "unparsed"):
        view.add_column(column)

    def fmt(value: Any) -> str:
        return "" if value is None or value != value else f"{value:.2f}"

    for _, row in table.iterrows():
        failures = row["judge_parse_failures"]
        view.add_row(
            str(row["model"]),
            str(row["kind"]),
            fmt(row["win_rate"]),
            fmt(row["standard_error"]),
            fmt(row["length_controlled_winrate"]),
            fmt(row["mt_bench"]),
            "" if failures is None or failures != failures else str(int(failures)),
        )
    console.print(view)
    for name, result in results.items():
        generation = result["generation"]
        console.print(
            f"{name}: {generation['generated']} answers generated, {generation['from_cache']} from cache"
        )
    console.print(f"leaderboard, plots and report: {out_dir} ({page.name})")
