"""Test-retest of the hard/easy split: sampled judge grades against expected ones (G-Eval).

The teacher and the student answer the recipe's seeds once; then the judge grades both answers
twice, with two sampling seeds, in each scoring mode: ``sampled`` (the number the judge writes,
at the recipe's sampling temperature, 1.0 for the embedded judge) and ``expected`` (sum p(k)*k over
the rating tokens, at the same temperature and at 0). Only the judge's seed differs between the two
runs of a mode, so their disagreement is the judge's own noise: how many rows change side of delta,
Cohen's kappa of the two splits, and how far MFD moves.

    .venv/bin/python benchmarks/judge_stability.py [--recipe recipes/default.yaml] [--seeds 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tapir.pipelines.prompts import template_text
from tapir.pipelines.seeds import load_seeds
from tapir.pipelines.tasks import ResponseGenerator, ResponseJudge
from tapir.recipe import apply_overrides, load_recipe_dict, recipe_from_dict
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext, build_llm, score_constraint

REPO = Path(__file__).resolve().parents[1]


def _run(task: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    task.load()
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), 8):
        for batch in task.process(rows[start : start + 8]):
            out += batch
    return out


def _answers(recipe: Any, context: LLMContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for role in ("teacher", "student"):
        task = ResponseGenerator(
            name=f"respond_{role}",
            llm=build_llm(recipe.role(role), role, context, step=f"respond_{role}"),
            template=template_text("respond"),
        )
        answered = _run(task, rows)
        rows = [{**row, f"{role}_response": a["response"]} for row, a in zip(rows, answered)]
    return [r for r in rows if r["teacher_response"] and r["student_response"]]


def _grades(recipe: Any, context: LLMContext, rows, scoring: str, seed: int, temperature: float):
    spec = recipe.judge.model_copy(update={"seed": seed})
    llm = build_llm(
        spec,
        "judge",
        context,
        max_new_tokens=recipe.judging.max_new_tokens,
        temperature=temperature,
        constraint=score_constraint(),
        step=f"judge_{scoring}_{seed}",
        top_logprobs=recipe.judging.top_logprobs if scoring == "expected" else None,
    )
    judge = ResponseJudge(
        name=f"judge_{scoring}_{seed}",
        llm=llm,
        template=template_text(recipe.judging.template),
        scoring=scoring,
    )
    mfd: list[float | None] = []
    for role in ("teacher", "student"):
        graded = _run(judge, [{**r, "response": r[f"{role}_response"]} for r in rows])
        scores = [g["score"] for g in graded]
        if role == "teacher":
            mfd = scores
        else:
            mfd = [t - s if t is not None and s is not None else None for t, s in zip(mfd, scores)]
    return mfd


def _kappa(a: list[bool], b: list[bool]) -> float | None:
    n = len(a)
    if not n:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def _split(pairs: list[tuple[float, float]], delta: float) -> dict[str, Any]:
    hard_a = [x >= delta for x, _ in pairs]
    hard_b = [y >= delta for _, y in pairs]
    kappa = _kappa(hard_a, hard_b)
    return {
        "delta": round(delta, 4),
        "hard_run_1": sum(hard_a),
        "hard_run_2": sum(hard_b),
        "same_side": sum(x == y for x, y in zip(hard_a, hard_b)),
        "kappa": None if kappa is None else round(kappa, 3),
    }


def compare(first: list[float | None], second: list[float | None], delta: float) -> dict[str, Any]:
    """Both runs' splits at the recipe's delta and at the first run's median MFD (a balanced
    split: with one model as teacher and student, MFD rarely reaches delta), and their ranks."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(first, second) if x is not None and y is not None]
    hard_a = [x >= delta for x, _ in pairs]
    hard_b = [y >= delta for _, y in pairs]
    kappa = _kappa(hard_a, hard_b)
    median = statistics.median(x for x, _ in pairs) if pairs else delta
    rho = spearmanr([x for x, _ in pairs], [y for _, y in pairs]).statistic if len(pairs) > 2 else None
    return {
        "at_median": _split(pairs, median),
        "spearman": None if rho is None or rho != rho else round(float(rho), 3),
        "graded_both_runs": len(pairs),
        "hard_run_1": sum(hard_a),
        "hard_run_2": sum(hard_b),
        "same_side": sum(x == y for x, y in zip(hard_a, hard_b)),
        "agreement": round(sum(x == y for x, y in zip(hard_a, hard_b)) / len(pairs), 3) if pairs else None,
        "kappa": None if kappa is None else round(kappa, 3),
        "mean_abs_mfd_change": round(statistics.fmean(abs(x - y) for x, y in pairs), 3) if pairs else None,
        "distinct_mfd_values": len({round(x, 3) for x, _ in pairs}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "default.yaml"))
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--cache", help="response cache folder (default: a fresh temporary one)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    data = apply_overrides(load_recipe_dict(args.recipe), [f"seeds.limit={args.seeds}", *args.overrides])
    recipe = recipe_from_dict(data, args.recipe)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="tapir-judge-stability-"))
    started = time.perf_counter()
    rows = load_seeds(recipe.seeds, recipe.seed)
    sampled_temperature = recipe.judging.temperature or 1.0
    arms = {
        f"sampled, T={sampled_temperature:g}": ("sampled", sampled_temperature),
        f"expected, T={sampled_temperature:g}": ("expected", sampled_temperature),
        "expected, T=0": ("expected", 0.0),
    }
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "recipe": recipe.name,
        "delta": recipe.difficulty.delta,
        "arms": {},
    }
    with EngineSet(Path(recipe.cache_dir), log_dir=cache / "logs", seed=recipe.seed) as engines:
        context = LLMContext(cache_dir=cache, seed=recipe.seed, engines=engines)
        for role in ("teacher", "student", "judge"):
            engines.ensure(recipe.role(role), role)  # type: ignore[arg-type]
        engines.start()
        answered = _answers(recipe, context, rows)
        results["rows"] = len(answered)
        for name, (scoring, temperature) in arms.items():
            first = _grades(recipe, context, answered, scoring, 1, temperature)
            second = _grades(recipe, context, answered, scoring, 2, temperature)
            results["arms"][name] = compare(first, second, recipe.difficulty.delta)
            print(name, json.dumps(results["arms"][name]), flush=True)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(f"\n{results['rows']} seeds answered; δ = {recipe.difficulty.delta:g}; {results['elapsed_s']} s\n")
    print(
        "| judge grades | rows graded twice | distinct MFD values | hard at δ (run 1 / 2) | same side of δ | "
        "hard at median MFD (1 / 2) | same side of median | κ at median | Spearman of MFD | "
        "mean \\|ΔMFD\\| |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results["arms"].items():
        m = r["at_median"]
        print(
            f"| {name} | {r['graded_both_runs']} | {r['distinct_mfd_values']} | {r['hard_run_1']} / "
            f"{r['hard_run_2']} | {r['same_side']} | {m['hard_run_1']} / {m['hard_run_2']} (median "
            f"{m['delta']:g}) | {m['same_side']} | {m['kappa']} | {r['spearman']} | "
            f"{r['mean_abs_mfd_change']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
