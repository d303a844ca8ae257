"""Which embedded model judges most like GPT-4: agreement on published MT-Bench grades.

Each candidate judge grades the answers six published models gave to MT-Bench
(``../shared/data/published/mt_bench``: FastChat's ``gpt-4_single.jsonl`` and the graded
answers) through the judge ``tapir eval`` builds for the default recipe, with only the model
swapped: fschat's judge prompts (with reference answers for math, reasoning and coding), a
llama.cpp engine, the verdict constrained to ``Rating: [[n]]`` and read by fschat's parser, the
grade the expected score over the rating tokens (G-Eval, as the data pass reads MFD grades), one
sampled re-ask of a verdict that does not parse. The written number (greedy) is kept beside it.

Reported against GPT-4's ratings: Spearman's rho and Kendall's tau (tau-b) per graded model
and pooled, each with a 95 % bootstrap interval (questions resampled, 1000 draws), and how the
judge ranks the six models against GPT-4's ranking.

    .venv/bin/python benchmarks/judge_agreement.py [--questions 80] [--turns 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tapir.benchmark_sources import resolve
from tapir.evaluation import mt_bench_metrics
from tapir.evaluation.judging import JudgeStats, build_judges
from tapir.recipe import load_recipe
from tapir.serving.embedded import EMBEDDED, EMBEDDED_INSTRUCT
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext, score_constraint

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO.parent / "shared" / "data" / "published" / "mt_bench"
CANDIDATES = {"gemma-3-270m (base)": EMBEDDED, "smollm2-135m-instruct": EMBEDDED_INSTRUCT}
BATCH = 8


def load_items(questions_per_model: int, turns: list[int]) -> list[dict[str, Any]]:
    """Every (question, model, turn) GPT-4 graded, with the judge prompt fschat would send."""
    from fastchat.llm_judge.common import load_judge_prompts

    questions = {q["question_id"]: q for q in map(json.loads, (PUBLISHED / "question.jsonl").open())}
    prompts = load_judge_prompts(
        str(resolve("embedded", "evaluation.mt_bench.judge_prompts", ".cache/tapir"))
    )
    references = {
        r["question_id"]: r["choices"][0]["turns"]
        for r in map(
            json.loads,
            resolve("embedded", "evaluation.mt_bench.reference_answers", ".cache/tapir").open(),
        )
    }
    answers: dict[tuple[str, int], list[str]] = {}
    for path in sorted((PUBLISHED / "model_answer").glob("*.jsonl")):
        for record in map(json.loads, path.open()):
            answers[(record["model_id"], record["question_id"])] = record["choices"][0]["turns"]
    chosen = sorted(questions)[:questions_per_model]
    items = []
    for judgment in map(json.loads, (PUBLISHED / "gpt-4_single.jsonl").open()):
        qid, model, turn = judgment["question_id"], judgment["model"], judgment["turn"]
        if qid not in chosen or turn not in turns or judgment["score"] < 0:
            continue
        question = questions[qid]
        _, messages = mt_bench_metrics.judge_messages(
            question, answers[(model, qid)], prompts, references.get(qid), turn
        )
        items.append(
            {
                "question_id": qid,
                "category": question["category"],
                "model": model,
                "turn": turn,
                "gpt4": float(judgment["score"]),
                "messages": messages,
            }
        )
    return sorted(items, key=lambda i: (i["question_id"], i["model"], i["turn"]))


def grade(
    candidate: str, items: list[dict[str, Any]], cache: Path, context_length: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The candidate's expected and written grade for every item, through the judge ``tapir
    eval`` builds (``build_judges`` -> ``JudgeClient(expected=True)``, fschat's ``[[n]]`` parser,
    one sampled retry for a verdict that does not parse). None, counted, when there is none."""
    defaults = load_recipe(REPO / "recipes" / "default.yaml")
    context_length = context_length or defaults.evaluation_judge.context_length
    spec = defaults.evaluation_judge.model_copy(update={"model": candidate, "context_length": context_length})
    settings = defaults.evaluation
    graded = []
    with EngineSet(cache, log_dir=cache / "logs") as engines:
        context = LLMContext(cache_dir=cache, engines=engines)
        judge = build_judges(
            spec,
            context,
            {"mt_bench": (settings.mt_bench.judge_max_new_tokens, score_constraint(1, 10))},
            constrain=settings.constrain_judge,
            batch_size=BATCH,
            retries=settings.judge_retries,
            expected={"mt_bench"},
            top_logprobs=defaults.judging.top_logprobs,
        )["mt_bench"]
        engines.start()
        stats = JudgeStats()
        started = time.perf_counter()
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            verdicts = judge.judge([i["messages"] for i in batch], mt_bench_metrics.parse_rating, stats)
            for item, verdict in zip(batch, verdicts):
                graded.append(
                    {
                        **{k: v for k, v in item.items() if k != "messages"},
                        "expected": verdict.value,
                        "written": verdict.written,
                        "attempts": verdict.attempts,
                    }
                )
            done = start + len(batch)
            rate = done / (time.perf_counter() - started)
            print(f"  {candidate}: {done}/{len(items)} graded ({rate:.2f}/s)", flush=True)
    return graded, stats.health()


def correlations(rows: list[dict[str, Any]], column: str) -> dict[str, float | int | None]:
    from scipy.stats import kendalltau, spearmanr

    pairs = [(r["gpt4"], r[column]) for r in rows if r[column] is not None]
    if len(pairs) < 3 or len({p[1] for p in pairs}) < 2:
        return {"n": len(pairs), "spearman": None, "kendall": None}
    x, y = zip(*pairs)
    rho, tau = float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)
    return {  # NaN (one side constant) is no correlation to report, not a number
        "n": len(pairs),
        "spearman": None if math.isnan(rho) else rho,
        "kendall": None if math.isnan(tau) else tau,
    }


def bootstrap(rows: list[dict[str, Any]], column: str, draws: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Point estimates and 95 % percentile intervals, resampling questions (an answer's grades
    for one question are not independent draws)."""
    by_question: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_question.setdefault(row["question_id"], []).append(row)
    keys = sorted(by_question)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {"spearman": [], "kendall": []}
    for _ in range(draws):
        drawn = [r for k in rng.choices(keys, k=len(keys)) for r in by_question[k]]
        result = correlations(drawn, column)
        for name in samples:
            if result[name] is not None:
                samples[name].append(float(result[name]))  # type: ignore[arg-type]
    point = correlations(rows, column)
    out: dict[str, Any] = {"n": point["n"]}
    for name, values in samples.items():
        values.sort()
        interval = (
            [values[int(0.025 * len(values))], values[min(len(values) - 1, int(0.975 * len(values)))]]
            if values
            else None
        )
        out[name] = {"value": point[name], "ci95": interval}
    return out


def system_ranking(rows: list[dict[str, Any]], column: str) -> dict[str, Any]:
    """The judge's ranking of the graded models by mean grade, against GPT-4's."""
    from scipy.stats import spearmanr

    graded = [r for r in rows if r[column] is not None]
    models = sorted({r["model"] for r in graded})
    mean = {m: statistics.fmean(r[column] for r in graded if r["model"] == m) for m in models}
    gpt4 = {m: statistics.fmean(r["gpt4"] for r in graded if r["model"] == m) for m in models}
    rho = float(spearmanr([gpt4[m] for m in models], [mean[m] for m in models]).statistic)
    ranks = {m: {"gpt4": round(gpt4[m], 3), "judge": round(mean[m], 3)} for m in models}
    return {"models": ranks, "spearman": None if math.isnan(rho) else rho}


def summarize(graded: list[dict[str, Any]], health: dict[str, Any]) -> dict[str, Any]:
    models = sorted({r["model"] for r in graded})
    return {
        "items": len(graded),
        "judge_health": health,  # parse failures, retries, call errors, as `tapir eval` reports them
        "no_expected_score": sum(r["expected"] is None for r in graded),
        "no_written_score": sum(r["written"] is None for r in graded),
        "expected": {
            "pooled": bootstrap(graded, "expected"),
            "per_model": {m: bootstrap([r for r in graded if r["model"] == m], "expected") for m in models},
            "system": system_ranking(graded, "expected"),
        },
        "written": {"pooled": bootstrap(graded, "written")},
        "mean_grade": statistics.fmean(r["expected"] for r in graded if r["expected"] is not None)
        if any(r["expected"] is not None for r in graded)
        else None,
        "distinct_written": sorted({r["written"] for r in graded if r["written"] is not None}),
    }


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cell(result: dict[str, Any]) -> str:
    if result.get("value") is None:
        return "-"
    low, high = result["ci95"] or (float("nan"), float("nan"))
    return f"{result['value']:.2f} [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=80, help="first N questions by id (default 80)")
    parser.add_argument("--turns", type=int, nargs="+", default=[1], choices=[1, 2])
    parser.add_argument(
        "--context-length", type=int, help="judge context (default: the default recipe's evaluation judge's)"
    )
    parser.add_argument("--cache", help="response cache folder (default: a fresh temporary one)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    items = load_items(args.questions, args.turns)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="tapir-judge-agreement-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "questions": args.questions,
        "turns": args.turns,
        "candidates": {},
    }
    for label, model in CANDIDATES.items():
        begun = time.perf_counter()
        graded, health = grade(model, items, cache, args.context_length)
        results["candidates"][label] = {
            **summarize(graded, health),
            "elapsed_s": round(time.perf_counter() - begun, 1),
        }
        (cache / f"graded-{model}.json").write_text(json.dumps(graded, indent=1), encoding="utf-8")
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(f"\n{len(items)} GPT-4-graded answers (turns {args.turns}); {results['elapsed_s']} s\n")
    print(
        "| judge | graded (no expected score) | Spearman vs GPT-4 [95 % CI] | Kendall vs GPT-4 [95 % CI] | "
        "written grade: Spearman | ranking of the 6 models: Spearman |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in results["candidates"].items():
        pooled = r["expected"]["pooled"]
        print(
            f"| {label} | {pooled['n']} ({r['no_expected_score']}) | {_cell(pooled['spearman'])} | "
            f"{_cell(pooled['kendall'])} | {_cell(r['written']['pooled']['spearman'])} | "
            f"{_number(r['expected']['system']['spearman'])} |"
        )
    print("\nper graded model (expected grade, Spearman [95 % CI]):\n")
    models = sorted(next(iter(results["candidates"].values()))["expected"]["per_model"])
    print("| model | " + " | ".join(results["candidates"]) + " |")
    print("|---|" + "---|" * len(results["candidates"]))
    for model in models:
        cells = [_cell(r["expected"]["per_model"][model]["spearman"]) for r in results["candidates"].values()]
        print(f"| {model} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
