"""``tapir data``: validate, run the graph, write datasets + card + manifest atomically.

Output is built in a hidden sibling folder and renamed into place only when complete
(``tapir.staging.atomic_folder``), so a failed or interrupted run never leaves a folder that
looks finished. Its layout and manifest are the stage contract (``tapir.stage_contract``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tapir.errors import DataError, IncompleteRunError, TapirError
from tapir.manifest import now_utc, sha256_file, write_json
from tapir.pipelines.decontamination import benchmark_texts, write_benchmark_file
from tapir.pipelines.decontamination import counts as contamination_counts
from tapir.pipelines.dry_run import check_spend_cap, planned_rows, refuse_unpriced_under_cap, unpriced_paid
from tapir.pipelines.expansion_plan import plan_summary
from tapir.pipelines.graph import CURRICULUM, EXPANSION_AUDIT, POOL, SELECTED, build_pipeline, pipeline_name
from tapir.pipelines.progress import LiveProgress, distilabel_logs_to
from tapir.pipelines.ray_runner import check_ray, ray_pipeline
from tapir.pipelines.report import (
    classifier_report,
    judging_settings,
    plot_summary,
    print_summary,
    summarise,
)
from tapir.pipelines.seeds import describe_source, load_seeds
from tapir.pipelines.steps import PLACEHOLDER, STEP_ERROR
from tapir.pricing import usd
from tapir.publishing.card import write_card
from tapir.recipe import Recipe
from tapir.review.corrections import applied_summary, load_corrections
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext, model_id, preflight
from tapir.serving.llms import failed_call_count, read_usage
from tapir.stage_contract import (
    EXPANSIONS,
    DataManifest,
    DataRun,
    curriculum_splits,
    data_settings,
    header,
    input_record,
    write_manifest,
)
from tapir.stage_contract import (
    POOL as POOL_TABLE,
)
from tapir.stage_contract import (
    SELECTED as SELECTED_TABLE,
)
from tapir.staging import atomic_folder, check_free_space, claim_output, mark_output, swap_into_place

# Columns that only matter inside the graph.
_INTERNAL = {PLACEHOLDER}
_ROUND_DROP = {"distilabel_metadata", PLACEHOLDER, "copies"}


def _rows(distiset: Any, name: str) -> list[dict[str, Any]]:
    if name not in distiset:
        return []
    rows = distiset[name]["train"].to_list()
    return [r for r in rows if not r.get(PLACEHOLDER)]


def _write_parquet(rows: list[dict[str, Any]], path: Path, drop: set[str]) -> int:
    import datasets

    clean = [{k: v for k, v in row.items() if k not in drop} for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(clean).to_parquet(str(path))
    return len(clean)


def _write_splits(curriculum: list[dict[str, Any]], splits: list[str], run: DataRun) -> dict[str, int]:
    """Every curriculum split from one table, so all share one schema. Typed per file, a column
    empty in one split (say ``review_response`` in the warm-up) is ``null`` there and ``string``
    in the next, and ``datasets.load_dataset`` refuses the config (it casts every split to the
    first's schema)."""
    import datasets

    columns = dict.fromkeys(k for row in curriculum for k in row if k not in _ROUND_DROP)
    table = datasets.Dataset.from_dict({k: [row.get(k) for row in curriculum] for k in columns})
    run.data_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in splits:
        part = table.select([i for i, row in enumerate(curriculum) if row["split"] == split])
        part.to_parquet(str(run.split_file(split)))
        written[run.relative(split)] = len(part)
    return written


def _explain_empty(pool: list[dict[str, Any]]) -> str:
    if not pool:
        return "the pipeline produced no rows (see the distilabel log above)"
    reasons: dict[str, int] = {}
    for row in pool:
        if row.get("excluded_reason"):
            key = str(row["excluded_reason"]).split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    top = ", ".join(f"{k} ×{v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return f"all {len(pool)} rows were excluded ({top})"


def run_data(
    recipe: Recipe,
    console: Console,
    recipe_path: str | None = None,
    engines: EngineSet | None = None,
    reask_unparsed: bool = False,
) -> Path:
    """Run the TAPIR data pipeline for ``recipe``; returns the output folder. With ``engines``
    (``tapir distill``) the run uses the caller's engines and leaves them running; with
    ``reask_unparsed`` cached answers that did not parse are asked again."""
    started = time.perf_counter()
    out_dir = recipe.resolved_output_dir
    _apart(out_dir, Path(recipe.cache_dir))
    claim_output(out_dir, "data", "output_dir")
    check_free_space(Path(recipe.cache_dir), "cache_dir")
    previous_complete = _complete_run(out_dir)
    hold_pipeline_cache(recipe)
    seeds = check_inputs(recipe)
    cost = check_spend_cap(recipe, len(seeds))
    kind, location = describe_source(recipe.seeds)
    console.print(f"[bold]tapir data[/] {recipe.name}: {len(seeds)} seeds from {kind} {location}")
    for role in unpriced_paid(recipe, cost):
        console.print(
            f"[yellow]warning: {role} is a paid endpoint with no price_per_million_tokens: "
            "what this run spends on it is not counted[/]"
        )
    benchmarks_file = _benchmarks_file(recipe)
    corrections = load_corrections(recipe)
    # hashed as read now: a file edited while the run goes makes its data stale, not current
    inputs = input_record(_input_files(recipe, corrections.sources))
    if corrections or corrections.unknown_labels:
        console.print(
            f"[bold]review[/]: applying {len(corrections.labels)} corrected labels, "
            f"{len(corrections.rejected)} rejections, {len(corrections.fixes)} fixed responses "
            f"from {len(corrections.sources)} pulled review(s)"
        )

    with atomic_folder(out_dir) as staging:
        (staging / "logs").mkdir(parents=True)
        owned = engines is None
        if engines is None:
            engines = EngineSet.for_recipe(recipe, staging / "logs")
        context = LLMContext(
            cache_dir=Path(recipe.cache_dir),
            usage_dir=staging / "logs",
            seed=recipe.seed,
            engines=engines,
            reask_unparsed=reask_unparsed,
            max_spend_usd=recipe.pipeline.max_spend_usd,
        )
        pipeline = build_pipeline(recipe, seeds, context, corrections, benchmarks_file)
        if recipe.pipeline.runner == "ray":
            pipeline = ray_pipeline(pipeline, recipe)
        use_cache = _completed_before(pipeline, context) and not reask_unparsed
        prices = unit_prices(recipe)
        progress = LiveProgress(staging / "logs", console, planned_rows(recipe, len(seeds)), prices)
        try:
            if not use_cache:  # an exact re-run answers from distilabel's cache: no engine needed
                engines.start(console)
            with distilabel_logs_to(staging / "logs" / "distilabel.log"), progress:
                distiset = pipeline.run(use_cache=use_cache)
        finally:
            if owned:
                engines.stop()
        if getattr(pipeline, "interrupted", False):
            raise KeyboardInterrupt  # what came back is a stopped graph's, not a result (exit 130)
        if not use_cache:
            console.print(progress.table(final=True))
        if distiset is None:
            raise TapirError("pipeline: distilabel returned no result (see its log above)")

        if CURRICULUM in distiset:
            for row in distiset[CURRICULUM]["train"].to_list():
                if row.get(STEP_ERROR):
                    raise DataError(row[STEP_ERROR])
        pool = _rows(distiset, POOL)
        expansions = _rows(distiset, EXPANSION_AUDIT)
        selected = _rows(distiset, SELECTED)
        curriculum = _rows(distiset, CURRICULUM)
        usage = read_usage(staging / "logs")
        failed_calls = failed_call_count(usage)
        if not curriculum and not failed_calls:
            raise DataError(f"curriculum: nothing to train on: {_explain_empty(pool)}")
        # With failed calls the run is written (pool and all, marked incomplete) and ends with
        # exit 3 naming what failed: a rerun asks exactly those again.
        summary = summarise(
            pool,
            expansions,
            selected,
            curriculum,
            usage,
            recipe.taxonomy.normalised_mix(),
            recipe.curriculum.hard_share,
        )
        summary["spend"] = spend_summary(usage, prices, recipe.pipeline.max_spend_usd)
        summary["review"] = applied_summary(pool, curriculum, corrections)
        summary["judging"] = judging_settings(recipe)
        summary["classifier"] = classifier_report(recipe)
        summary["expansion_plan"] = plan_summary(expansions)
        summary["decontamination"] = {
            "enabled": recipe.decontamination.enabled,
            "excluded": contamination_counts(pool),
            "tests": f"exact, normalised, {recipe.decontamination.ngram}-gram overlap",
        }
        run = DataRun(staging)
        files = _write_outputs(run, pool, expansions, selected, curriculum, recipe)
        summary["plots"] = [str(p.relative_to(staging)) for p in plot_summary(summary, staging / "plots")]
        summary["elapsed_s"] = round(time.perf_counter() - started, 1)
        write_json(run.summary_file, summary)
        run.recipe_file.write_text(
            yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        manifest = _manifest(recipe, recipe_path, seeds, files, summary, pipeline, inputs)
        write_manifest(staging, manifest)
        write_card(run.card_file, recipe, summary, manifest.model_dump(mode="json"))
        mark_output(staging, "data")
        if disk_full := _disk_full_reason(usage):
            raise DataError(
                f"cache_dir: the disk holding {recipe.cache_dir} filled up during the run ({disk_full}); "
                f"free some space and run again ({out_dir} is as it was)"
            )
        kept_beside = None
        if failed_calls and previous_complete:
            # never a complete output replaced by a worse one: this run's goes beside it
            kept_beside = out_dir.with_name(f"{out_dir.name}.incomplete")
            claim_output(kept_beside, "data", "output_dir")
            swap_into_place(staging, kept_beside)
    if not failed_calls:
        # distilabel's cache holds the failed rows as they came out; a re-run must instead
        # run the graph afresh, the response cache answering all but the failed requests.
        _mark_completed(pipeline, context)
    print_summary(summary, console)
    console.print(
        f"[green]wrote[/] {kept_beside or out_dir} in {summary['elapsed_s']:.0f}s "
        f"({summary['llm_calls_this_run']} LLM calls this run)"
    )
    capped = spend_capped(usage)
    if capped:
        raise IncompleteRunError(
            f"pipeline.max_spend_usd: the run reached its ${recipe.pipeline.max_spend_usd:g} cap "
            f"(spent ${summary['spend']['usd']:,.2f}); {capped} calls were not made. Every answer so far "
            f"is cached and not paid again: rerun `tapir data` (raise --max-spend to finish); "
            f"{kept_beside or out_dir} holds the rows done, marked incomplete"
            + (f" ({out_dir} keeps the previous complete run)" if kept_beside else "")
        )
    if refused := _batch_refused(usage):
        raise DataError(
            f"llm calls: {refused}; a rerun would send the same request: fix what it names "
            f"({kept_beside or out_dir} holds this incomplete run)"
        )
    if failed_calls and kept_beside is not None:
        raise IncompleteRunError(
            f"llm calls: {failed_calls_line(usage)}; {out_dir} keeps the previous complete run, "
            f"this incomplete one is in {kept_beside}; rerun `tapir data` to ask exactly those again"
        )
    if failed_calls:
        raise IncompleteRunError(
            f"llm calls: {failed_calls_line(usage)}; {out_dir} holds the rows that did not need them "
            f"({DataRun.relative(POOL_TABLE)} and all; marked incomplete, `tapir train` refuses it); "
            "rerun `tapir data` to ask exactly those again"
        )
    return out_dir


def _complete_run(folder: Path) -> bool:
    """Whether ``folder`` holds a finished data run whose every call was answered."""
    from tapir.stage_contract import read_data_manifest

    try:
        manifest = read_data_manifest(folder)
    except TapirError:
        return False
    return manifest is not None and not manifest.failed_calls


def _failure(usage: dict[str, dict[str, Any]], matches: Any) -> str | None:
    """``role: reason`` for the first failure reason ``matches`` accepts, or None."""
    for role, numbers in sorted(usage.items()):
        for reason in numbers.get("failure_reasons") or {}:
            if matches(reason):
                return f"{role}: {reason}"
    return None


def _batch_refused(usage: dict[str, dict[str, Any]]) -> str | None:
    """The Batch API refused a call for good (a 4xx of its files/batches endpoints): the input
    is wrong, and a rerun is not the cure (exit 2, not 3)."""
    return _failure(usage, lambda reason: reason.startswith("batch API refused"))


def _disk_full_reason(usage: dict[str, dict[str, Any]]) -> str | None:
    """The disk filled up (the response cache could not store an answer): no rerun helps until
    space is freed."""
    return _failure(
        usage, lambda reason: "disk is full" in reason.lower() or "no space left" in reason.lower()
    )


def unit_prices(recipe: Recipe) -> dict[str, dict[str, float]]:
    """Each priced role's $ per million tokens as billed (batch discount applied)."""
    return {
        role: price
        for role in ("teacher", "student", "judge")
        if (price := recipe.role(role).unit_price())  # type: ignore[arg-type]
    }


def spend_summary(
    usage: dict[str, dict[str, Any]], prices: dict[str, dict[str, float]], cap: float | None
) -> dict[str, Any]:
    """What this run's calls cost per priced role and in total (cached answers cost nothing)."""
    roles = {
        role: round(usd(price, usage[role]["input_tokens"], usage[role]["output_tokens"]), 4)
        for role, price in prices.items()
        if role in usage
    }
    return {"usd": round(sum(roles.values()), 4), "roles": roles, "max_spend_usd": cap}


def spend_capped(usage: dict[str, dict[str, Any]]) -> int:
    """Calls not made because the spend cap was reached."""
    return int(sum((u.get("failure_reasons") or {}).get("spend cap reached", 0) for u in usage.values()))


def failed_calls_line(usage: dict[str, dict[str, Any]]) -> str:
    """Which roles' calls failed for good, how many of how many, and the first reasons:
    ``teacher: all 16 calls failed (HTTP 500 ×16)``."""
    parts = []
    for role, numbers in sorted(usage.items()):
        failed = int(numbers.get("failed_calls", 0))
        if not failed:
            continue
        calls = int(numbers.get("calls", 0))
        reasons = sorted((numbers.get("failure_reasons") or {}).items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{reason} ×{count}" for reason, count in reasons[:3])
        count = f"all {failed} calls" if failed >= calls else f"{failed} of {calls} calls"
        parts.append(f"{role}: {count} failed for good after retries" + (f" ({shown})" if shown else ""))
    return "; ".join(parts)


def _apart(out_dir: Path, cache: Path) -> None:
    """The output folder is replaced whole at the end of a run: the cache must not live in it
    (nor hold it)."""
    out, cache = out_dir.expanduser().resolve(), cache.expanduser().resolve()
    if out == cache or out.is_relative_to(cache) or cache.is_relative_to(out):
        raise DataError(
            f"cache_dir: {cache} and output_dir {out} overlap; a data run replaces its output folder "
            "whole, so keep the cache outside it"
        )


def check_inputs(recipe: Recipe) -> list[dict[str, Any]]:
    """What can be checked before anything is written: a spend cap that could not see a paid
    role, every role's model or endpoint (retried like any call), then the seeds; returns the
    seed rows."""
    refuse_unpriced_under_cap(recipe)
    check_ray(recipe)
    expected = recipe.judging.top_logprobs if recipe.judge_scoring == "expected" else None
    for role in ("teacher", "student", "judge"):
        preflight(recipe.role(role), role, top_logprobs=expected if role == "judge" else None)
    return load_seeds(recipe.seeds, recipe.seed)


def hold_pipeline_cache(recipe: Recipe) -> None:
    """One run per distilabel cache: two runs of one recipe share its folder (and its completion
    marker), which distilabel does not survive. Held for the command's life (``tapir.run_lock``)."""
    from tapir.run_lock import hold

    cache = Path(recipe.cache_dir)
    if cache.exists() and not cache.is_dir():
        raise DataError(f"cache_dir: {cache} is a file, not a folder")
    hold(
        cache / "distilabel" / f"{pipeline_name(recipe)}.lock",
        "cache_dir",
        f"the distilabel cache of recipe {recipe.name!r} in {cache}",
    )


def _benchmarks_file(recipe: Recipe) -> str | None:
    """The benchmark prompts to keep out of the data, as one content-named file in the cache."""
    settings = recipe.decontamination
    if not settings.enabled:
        return None
    texts = benchmark_texts(settings.alpaca_eval, settings.mt_bench, recipe.cache_dir)
    return str(write_benchmark_file(texts, Path(recipe.cache_dir) / "decontamination"))


def _write_outputs(run: DataRun, pool, expansions, selected, curriculum, recipe: Recipe) -> dict[str, Any]:
    files: dict[str, Any] = {}
    if curriculum:  # none when every call of a role failed: the run is incomplete anyway
        files = _write_splits(curriculum, curriculum_splits(recipe.curriculum.rounds), run)
    tables = [(SELECTED_TABLE, selected), (POOL_TABLE, pool)]
    if expansions:
        tables.append((EXPANSIONS, expansions))
    for name, rows in tables:
        files[run.relative(name)] = _write_parquet(rows, run.split_file(name), _INTERNAL)
    return {name: {"rows": rows, "sha256": sha256_file(run.root / name)} for name, rows in files.items()}


def _manifest(recipe, recipe_path, seeds, files, summary, pipeline, inputs) -> DataManifest:
    kind, location = describe_source(recipe.seeds)
    seed_file = Path(location)
    return DataManifest(
        **header("data", recipe, recipe_path),
        seed=recipe.seed,
        data_settings=data_settings(recipe),
        files=files,
        # Calls that failed for good: their rows are missing, so the data is not final.
        failed_calls=failed_call_count(summary["usage"]),
        models={
            role: {
                "backend": recipe.role(role).backend,
                "model": model_id(recipe.role(role)),
                "base_url": recipe.role(role).base_url,
            }
            for role in ("teacher", "student", "judge")
        },
        seeds={
            "source": kind,
            "location": location,
            "rows_used": len(seeds),
            "sha256": sha256_file(seed_file) if seed_file.is_file() else None,
            "license": recipe.seeds.license,
        },
        distilabel={
            "pipeline": pipeline.name,
            "signature": pipeline.signature,
            "cache_dir": str(Path(recipe.cache_dir) / "distilabel"),
        },
        review={
            "applied": recipe.review.apply,
            "decisions": summary["review"]["sources"],
        },
        inputs=inputs,
        llm_calls_this_run=summary["llm_calls_this_run"],
        elapsed_s=summary["elapsed_s"],
    )


def _input_files(recipe: Recipe, decisions: list[dict[str, Any]]) -> dict[str, Path]:
    """Every local file this data pass read, by the recipe field that named it."""
    from tapir.chat_templates import resolve_chat_template

    found: dict[str, Path] = {}
    kind, location = describe_source(recipe.seeds)
    if kind != "hub":
        found["seeds.source"] = Path(location)
    offline = recipe.taxonomy.offline
    if recipe.taxonomy.classifier == "offline" and offline.rows != "embedded":
        found["taxonomy.offline.rows"] = Path(offline.rows).expanduser()
    settings = recipe.decontamination
    for name in ("alpaca_eval", "mt_bench"):
        value = getattr(settings, name)
        if settings.enabled and value and value != "embedded" and Path(value).expanduser().is_file():
            found[f"decontamination.{name}"] = Path(value).expanduser()
    for role in ("teacher", "student", "judge"):
        template = recipe.role(role).chat_template
        if template:
            found[f"{role}.chat_template"] = resolve_chat_template(template, f"{role}.chat_template")
    for number, source in enumerate(decisions, start=1):
        found[f"review.decisions.{number}"] = Path(source["file"])
    return found


def _completion_marker(pipeline: Any, context: LLMContext) -> Path:
    return (
        context.cache_dir
        / "distilabel"
        / "completed"
        / f"{pipeline.name}-{pipeline.aggregated_steps_signature}"
    )


def _completed_before(pipeline: Any, context: LLMContext) -> bool:
    """Use distilabel's cache only for an exact re-run of a finished execution.

    distilabel 1.5.3 can stall when it resumes from a *partial* step cache (e.g. only a
    downstream global step changed; argilla-io/distilabel#1065 is one report of its fragility).
    Changed recipes therefore run the graph afresh, and the LLMs' response cache answers every
    prompt that did not change, so they still make no needless calls.
    """
    return _completion_marker(pipeline, context).exists()


def _mark_completed(pipeline: Any, context: LLMContext) -> None:
    marker = _completion_marker(pipeline, context)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(now_utc() + "\n", encoding="utf-8")
