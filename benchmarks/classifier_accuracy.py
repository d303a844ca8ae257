"""Task-label accuracy on tapir's 237 labelled instructions: offline classifiers vs the LLM one.

The offline classifiers (``taxonomy.classifier: offline``) are scored on held-out folds
(stratified k-fold: a row is labelled by a model that never saw it); the LLM classifier
(``taxonomy.classifier: llm``, the recipe's classifier role prompted with the taxonomy under a
choice grammar, as ``tapir data`` runs it) learns nothing, so every row is held out for it.

    .venv/bin/python benchmarks/classifier_accuracy.py [--recipe recipes/default.yaml] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tapir.pipelines.graph import task_classifier
from tapir.pipelines.offline_classifier import fit, labelled_rows
from tapir.recipe import OfflineClassifierSettings, apply_overrides, load_recipe_dict, recipe_from_dict
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext

REPO = Path(__file__).resolve().parents[1]


def llm_accuracy(recipe: Any, pairs: list[tuple[str, str]], work: Path) -> dict[str, Any]:
    # the step `tapir data` builds with taxonomy.classifier: llm
    prompted = recipe.model_copy(
        update={"taxonomy": recipe.taxonomy.model_copy(update={"classifier": "llm"})}
    )
    with EngineSet(Path(recipe.cache_dir), log_dir=work / "logs", seed=recipe.seed) as engines:
        context = LLMContext(cache_dir=work, seed=recipe.seed, engines=engines)
        task = task_classifier(prompted, context)
        engines.start()
        task.load()
        labels: list[str | None] = []
        rows = [{"instruction": text, "input": ""} for text, _ in pairs]
        for start in range(0, len(rows), 8):
            for batch in task.process(rows[start : start + 8]):
                labels += [r["task"] for r in batch]
    truth = [label for _, label in pairs]
    correct = sum(p == t for p, t in zip(labels, truth))
    return {
        "rows": len(pairs),
        "accuracy": round(correct / len(pairs), 3),
        "unparsed": sum(p is None for p in labels),
        "labels_used": len({p for p in labels if p}),
        "most_common": Counter(p for p in labels if p).most_common(3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "default.yaml"))
    parser.add_argument("--limit", type=int, help="LLM classifier on the first N rows only")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    recipe = recipe_from_dict(apply_overrides(load_recipe_dict(args.recipe), []), args.recipe)
    work = Path(tempfile.mkdtemp(prefix="tapir-classifier-"))
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "labels": len(recipe.taxonomy.labels),
    }
    for features in ("embedded", "tfidf"):
        started = time.perf_counter()
        settings = OfflineClassifierSettings(features=features)
        fitted, _ = fit(settings, recipe.taxonomy.labels, work, recipe.seed)
        results[f"offline, {features}"] = {
            **fitted.report(),
            "seconds_to_fit": round(time.perf_counter() - started, 1),
            "worst_labels": sorted(fitted.per_label_recall.items(), key=lambda kv: kv[1])[:4],
        }
        print(features, json.dumps(results[f"offline, {features}"]), flush=True)
    pairs = labelled_rows(OfflineClassifierSettings(), recipe.taxonomy.labels)
    pairs = pairs[: args.limit] if args.limit else pairs
    started = time.perf_counter()
    results["llm"] = {**llm_accuracy(recipe, pairs, work), "seconds": round(time.perf_counter() - started, 1)}
    print("llm", json.dumps(results["llm"]), flush=True)
    print("\n| classifier | rows scored | held-out accuracy | note |\n|---|---|---|---|")
    for features in ("embedded", "tfidf"):
        r = results[f"offline, {features}"]
        print(
            f"| offline, {features} features | {r['training_rows']} | {r['held_out_accuracy']:.3f} | "
            f"{r['folds']}-fold CV, fit {r['seconds_to_fit']} s |"
        )
    r = results["llm"]
    print(
        f"| LLM ({recipe.role(recipe.taxonomy.classifier_role).model}, prompted) | {r['rows']} | "
        f"{r['accuracy']:.3f} | {r['labels_used']} labels used; top {r['most_common']}; "
        f"{r['unparsed']} unparsed |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
