"""Benchmark prompts are kept out of the training data: the three tests on their own (unit), and
planted contaminated seeds through the scripted pipeline (integration)."""

from __future__ import annotations

import json

import datasets
import pytest
from rich.console import Console

from tapir.pipelines.decontamination import BenchmarkIndex, benchmark_texts, words
from tapir.pipelines.run import run_data

from .conftest import make_recipe

ALPACA = "Write a short story about a robot who learns to paint with the colours of the autumn forest."
MT_TURN = (
    "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences."
)


def index() -> BenchmarkIndex:
    return BenchmarkIndex({"alpaca_eval": [ALPACA], "mt_bench": [MT_TURN]}, n=13)


def test_exact_normalised_and_ngram_matches_are_named():
    found = index()
    assert found.match(ALPACA) == ("alpaca_eval", "exact")
    assert found.match(
        "  WRITE a short-story about a robot, who learns to paint with the colours of the autumn forest!"
    ) == (
        "alpaca_eval",
        "normalised",
    )
    embedded = f"Please read this first. {MT_TURN[:-1]} and a list of ten things to pack."
    assert found.match(embedded) == ("mt_bench", "13-gram")
    # Twelve shared words are not enough; unrelated and empty text pass.
    assert found.match("Write a short story about a robot who learns to paint with") is None
    assert found.match("Solve 2 + 2.") is None and found.match("") is None and found.match(None) is None
    # A response that quotes a benchmark prompt counts too, and names the column.
    row = {"instruction": "Give an example prompt.", "input": "", "teacher_response": f"Sure: {ALPACA}"}
    assert found.check_row(row) == "contaminated: alpaca_eval (13-gram, teacher_response)"


def test_the_shipped_benchmarks_are_whole():
    texts = benchmark_texts("embedded", "embedded", ".cache/tapir")
    assert len(texts["alpaca_eval"]) == 805 and len(texts["mt_bench"]) == 160  # 80 questions x 2 turns


@pytest.mark.integration
def test_planted_contaminated_rows_go_before_rebalancing_and_are_counted(tmp_path, scripted):
    texts = benchmark_texts("embedded", "embedded", ".cache/tapir")
    alpaca, shipped = texts["alpaca_eval"], BenchmarkIndex(texts)
    # AlpacaEval carries two MT-Bench questions; plant one that is only MT-Bench's, and one of those.
    only_mt = next(q for q in texts["mt_bench"] if shipped.match(q)[0] == "mt_bench" and len(words(q)) >= 20)
    in_both = next(q for q in texts["mt_bench"] if shipped.match(q)[0] == "alpaca_eval+mt_bench")
    rows = [{"instruction": f"Solve math problem number {i} carefully."} for i in range(8)]
    rows += [{"instruction": f"Write a short poem about topic {i}."} for i in range(8)]
    planted = [
        alpaca[0],  # verbatim
        alpaca[1].upper(),  # normalised
        f"Before you start, note this. {only_mt}",  # a 13-gram inside a longer instruction
        in_both,
    ]
    rows += [{"instruction": text} for text in planted]
    seeds = tmp_path / "planted.jsonl"
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = make_recipe(tmp_path, seeds={"source": str(seeds), "limit": None})
    out = run_data(recipe, Console(quiet=True))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decontamination"]["excluded"] == {"alpaca_eval": 3, "mt_bench": 2}
    pool = datasets.load_dataset("parquet", data_files=str(out / "data/pool.parquet"), split="train")
    reasons = {r["instruction"]: r["excluded_reason"] for r in pool if r["instruction"] in planted}
    assert reasons[planted[0]] == "contaminated: alpaca_eval (exact, instruction)"
    assert reasons[planted[1]] == "contaminated: alpaca_eval (normalised, instruction)"
    assert reasons[planted[2]] == "contaminated: mt_bench (13-gram, instruction)"
    assert reasons[planted[3]] == "contaminated: alpaca_eval+mt_bench (exact, instruction)"
    for split in ("warmup", "round_1", "round_2", "selected"):
        table = datasets.load_dataset("parquet", data_files=str(out / f"data/{split}.parquet"), split="train")
        assert not set(table["instruction"]) & set(planted), split
    # Re-balancing says where each task's rows came from: seeds, generated (expansions), copies.
    selected = datasets.load_dataset("parquet", data_files=str(out / "data/selected.parquet"), split="train")
    for task, sources in summary["task_sources"].items():
        rows = [r for r in selected if r["task"] == task]
        assert sources["seed"] + sources["generated"] == len(rows)
        assert sources["generated"] == sum(r["origin"] == "expansion" for r in rows)
        assert sources["copies"] == summary["tasks_after"][task] - len(rows)
        assert all(r["copies"] <= 4 for r in rows)  # rebalance.max_copies
    assert sum(s["generated"] for s in summary["task_sources"].values()) > 0
    card = (out / "README.md").read_text()
    header = "| task | before | expansion asked | after | of which generated | copies added | target share |"
    assert header in card
    assert "## Decontamination" in card and "alpaca_eval 3, mt_bench 2" in card
