"""`tapir eval` end to end on a tiny real transformers model with a scripted judge: answers with
the model's own template, verdicts parsed (failures counted), alpaca_eval/fschat files, the
leaderboard, plots, an HTML page that renders, and a re-run that generates and judges nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from rich.console import Console

from tapir.evaluation import html_report
from tapir.evaluation.run import run_eval
from tapir.recipe import recipe_from_dict
from tapir.serving.llms import read_usage
from tapir.serving.simulator import MALFORMED

from .conftest import shared_mt_bench, tiny_recipe_dict
from .tiny_student import build_tiny_student

pytestmark = pytest.mark.integration

QUIET = Console(quiet=True)
INSTRUCTIONS = [
    "Give three tips for staying healthy.",
    "Write a haiku about autumn leaves.",
    f"{MALFORMED} Explain recursion to a child.",
    "Translate 'good morning' into French.",
    "List two prime numbers above ten.",
    "Summarise the plot of a fairy tale in one sentence.",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    corpus = INSTRUCTIONS + ["### Instruction:\n", "### Response:\n", "An answer."] * 4
    return build_tiny_student(tmp_path_factory.mktemp("tiny") / "model", corpus)


def eval_recipe(tmp_path: Path, model: Path, alpaca_eval_annotator: str = "judge", **evaluation):
    reference = tmp_path / "reference.json"
    reference.write_text(
        json.dumps(
            [
                {"instruction": i, "output": f"A reference answer to: {i}", "generator": "ref"}
                for i in INSTRUCTIONS
            ]
        )
    )
    difficulty = tmp_path / "instruction_difficulty.csv"
    pd.DataFrame({"instruction_difficulty": [0.1 * k for k in range(len(INSTRUCTIONS))]}).to_csv(difficulty)
    settings = {
        "models": [str(model)],
        "batch_size": 4,
        "published": ["gpt4_1106_preview", "vicuna-13b"],
        "judge": {"backend": "scripted", "model": "judge"},
        "alpaca_eval": {
            "reference": str(reference),
            "difficulty": str(difficulty),
            "max_new_tokens": 8,
            "annotator": alpaca_eval_annotator,
        },
        "mt_bench": shared_mt_bench(),
        **evaluation,
    }
    return recipe_from_dict(tiny_recipe_dict(tmp_path, evaluation=settings))


def test_eval_writes_leaderboard_plots_and_report_then_reuses_caches(tmp_path, tiny_model):
    recipe = eval_recipe(tmp_path, tiny_model)
    out = run_eval(recipe, QUIET)
    name = tiny_model.name  # "model"

    board = pd.read_csv(out / "leaderboard.csv")
    ours = board[board["model"] == name].iloc[0]
    assert list(board["kind"]) == ["model", "published", "published", "paper", "paper", "paper"]
    annotations = pd.read_json(out / name / "alpaca_eval" / "annotations.json")
    assert len(annotations) == len(INSTRUCTIONS)
    # the scripted judge cannot answer the MALFORMED pair: asked twice, counted, never scored
    failed = annotations[annotations["preference"].isna()]
    assert list(failed["instruction"]) == [INSTRUCTIONS[2]]
    assert failed["judge_attempts"].tolist() == [2]
    parsed = annotations["preference"].dropna()
    assert set(parsed) <= {1.0, 2.0}
    assert ours["n_total"] == len(INSTRUCTIONS) - 1
    assert ours["win_rate"] == pytest.approx(100 * (parsed == 2.0).mean())
    metrics = json.loads((out / name / "alpaca_eval" / "metrics.json").read_text())
    assert metrics["judge_health"]["parse_failures"] == 1
    assert metrics["judge_health"]["retries"] == 1
    assert metrics["metrics"]["lc_method"].startswith("instruction difficulty")
    # the verdict is mapped back through the shown order: "m" means the first output shown
    for row in annotations.dropna(subset=["preference"]).itertuples():
        model_won = row.preference == 2.0
        said_first = row.raw_completion == "m"
        assert model_won == (said_first == row.model_shown_first)

    # MT-Bench: 8 questions x 2 turns in fschat's files; the model answered with its own template
    judgments = pd.read_json(out / name / "mt_bench" / "model_judgment" / "judge_single.jsonl", lines=True)
    assert len(judgments) == 16 and judgments["score"].between(1, 10).all()
    assert ours["mt_bench"] == pytest.approx(judgments["score"].mean())
    # a judge tapir serves is read as expected scores (sum p(k)*k): continuous, the written kept
    assert ours["mt_bench_scoring"] == "expected"
    assert judgments["written_score"].between(1, 10).all()
    mt_metrics = json.loads((out / name / "mt_bench" / "metrics.json").read_text())
    assert mt_metrics["judge_health"]["no_expected_score"] == 0
    # judge-free: the tiny random model never ends an answer (every one hits the 8-token cap)
    assert mt_metrics["metrics"]["answers"]["ends_rate"] == 0.0
    assert ours["ae_ends_rate"] == 0.0 and ours["ae_mean_tokens"] == 8
    assert 0.0 <= ours["mt_in_format"] <= 1.0
    assert ours["mt_bench_turn_2"] == pytest.approx(judgments.loc[judgments["turn"] == 2, "score"].mean())
    answers = [json.loads(x) for x in (out / name / "mt_bench" / "model_answer" / f"{name}.jsonl").open()]
    assert len(answers) == 8 and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    math = judgments[judgments["category"] == "math"]
    assert set(math["judge"].map(lambda j: j[1])) == {"single-math-v1", "single-math-v1-multi-turn"}

    summary = json.loads((out / "summary.json").read_text())
    generation = {"backend": "transformers", "generated": 6 + 16, "from_cache": 0}  # a Hub-style model
    assert summary["results"][name]["generation"] == generation
    calls = read_usage(out / name / "alpaca_eval" / "usage")["judge"]["calls"]
    assert calls == len(INSTRUCTIONS) + 1  # one retry
    # a model outside the curriculum has no round curve
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "alpaca_eval_winrates.png",
        "mt_bench_radar.png",
    ]
    assert "| model |" in (out / "leaderboard.md").read_text()

    if html_report.chromium_binary() or os.environ.get("CI"):
        rendered = html_report.check_renders(out / "report.html")
        assert rendered["rendered"] == "yes" and rendered["images"] >= 2, rendered
        assert rendered["table_rows"] >= len(board) + 1
        assert rendered["fits_the_window"] is True  # wide tables scroll in their box, not the page
    page = (out / "report.html").read_text()
    assert "805.00" not in page and ">805<" in page  # counts as integers (published rows' n)
    assert "<th>verdicts</th>" in page and "<th>input tokens</th>" in page  # judge health, a table
    assert "judged by" in page and "only rows judged by the same judge" in page

    # Unchanged model, unchanged settings: nothing generated, nothing judged, same board.
    run_eval(recipe, QUIET)
    again = json.loads((out / "summary.json").read_text())["results"][name]
    assert again["generation"] == {"backend": "transformers", "generated": 0, "from_cache": 22}
    assert again["alpaca_eval"]["judge_health"]["usage"]["calls"] == 0
    assert again["mt_bench"]["judge_health"]["usage"]["calls"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "leaderboard.csv"), board)

    # The model card of the evaluated model carries its leaderboard row, judge named.
    from huggingface_hub import ModelCard

    from tapir.publishing.model_push import push_model

    folder = push_model(recipe, QUIET, str(tiny_model), dry_run=True, to=str(tmp_path / "model-hub"))
    card = ModelCard.load(folder / "README.md")
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"win_rate", "length_controlled_winrate", "mt_bench_score"}
    assert results["win_rate"].metric_value == pytest.approx(round(ours["win_rate"], 2))
    assert results["mt_bench_score"].metric_value == pytest.approx(round(ours["mt_bench"], 2))
    assert {r.metric_config for r in results.values()} == {f"judge: {ours['judge']}"}
    assert f"| {name} | {ours['judge']} | {ours['win_rate']:.2f} ± " in card.text


def test_eval_errors_are_one_line_and_write_nothing(tmp_path, tiny_model):
    recipe = eval_recipe(tmp_path, tiny_model)
    path = tmp_path / "recipe.yaml"
    data = recipe.model_dump(mode="json")
    import yaml

    cases = {
        "evaluation.alpaca_eval.reference": {
            "alpaca_eval": {**data["evaluation"]["alpaca_eval"], "reference": "nope.json"}
        },
        "evaluation.models": {"models": [str(tmp_path / "missing-model")]},
        "evaluation.published": {"published": ["no-such-model"]},
    }
    no_template = tmp_path / "no-template"
    no_template.mkdir()
    for file in tiny_model.iterdir():
        if file.name not in ("chat_template.jinja",):
            (no_template / file.name).write_bytes(file.read_bytes())
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    cases["evaluation.models: "] = {"models": [str(no_template)]}
    for field, change in cases.items():
        broken = {**data, "evaluation": {**data["evaluation"], **change}}
        path.write_text(yaml.safe_dump(broken))
        done = subprocess.run(
            [sys.executable, "-m", "tapir.cli", "eval", "--recipe", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 2, (field, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith(f"tapir: error: {field.rstrip(': ')}"), (field, lines[-3:])
        if field != "evaluation.models: ":
            assert not recipe.resolved_eval_dir.exists(), field
    assert "no chat template" in lines[-1]


def test_judge_usage_is_priced_only_when_a_price_table_is_given(tmp_path):
    from tapir.evaluation.judging import usage_summary

    (tmp_path / "usage.judge.1.jsonl").write_text(
        json.dumps(
            {"role": "judge", "calls": 3, "input_tokens": 2_000_000, "output_tokens": 500_000, "seconds": 2}
        )
        + "\n"
    )
    assert "cost_usd" not in usage_summary(tmp_path, None)
    priced = usage_summary(tmp_path, {"input": 10.0, "output": 30.0})
    assert priced["calls"] == 3 and priced["cost_usd"] == pytest.approx(2 * 10.0 + 0.5 * 30.0)


def test_one_judge_engine_serves_every_benchmark_each_with_its_own_constraint(tmp_path):
    from tapir.evaluation.judging import build_judges
    from tapir.recipe import ModelSpec
    from tapir.serving.llm_factory import LLMContext, choice_constraint

    context = LLMContext(cache_dir=tmp_path)
    judges = build_judges(
        ModelSpec(backend="scripted", model="judge"),
        context,
        {"alpaca_eval": (16, choice_constraint(["m", "M"])), "mt_bench": (2048, None)},
        constrain=True,
        batch_size=2,
        retries=0,
    )
    engines = context.engine_set().plan()  # one engine (e.g. one vLLM server), not two
    assert len(engines) == 1 and engines[0]["serves"] == ["eval_judge:alpaca_eval", "eval_judge:mt_bench"]
    assert judges["alpaca_eval"].llm.choices == ["m", "M"] and judges["mt_bench"].llm.grammar is None
    assert (judges["alpaca_eval"].max_new_tokens, judges["mt_bench"].max_new_tokens) == (16, 2048)


def test_served_answers_fan_out_to_the_engine_and_a_failed_one_is_an_error_not_an_empty_answer(tmp_path):
    """Answers through an engine (as a checkpoint served by llama.cpp or vLLM is): requests run
    concurrently up to the engine's cap; an answer that fails after its retries stops the model's
    evaluation with one line, and the answers that came back are cached for the rerun."""
    from tapir.errors import EvaluationError
    from tapir.evaluation.generation import CachedGenerator, EngineGenerator
    from tapir.recipe import ModelSpec
    from tapir.serving.engines import EngineSet
    from tapir.serving.llm_factory import LLMContext
    from tapir.serving.simulator import HANG_MARKER

    spec = ModelSpec(
        backend="scripted",
        model="student",
        options={"latency_ms": 200},
        max_concurrency=8,
        max_retries=1,
        timeout_s=1,
    )
    ask = [[{"role": "user", "content": f"Question {n}?"}] for n in range(15)]
    with EngineSet(tmp_path) as engines:
        context = LLMContext(cache_dir=tmp_path, engines=engines)
        served = EngineGenerator(spec, context, "round_1")
        served.llm.retry_base_s = 0.01
        generator = CachedGenerator("round_1|scripted", lambda: served, tmp_path)
        answers = generator.generate(ask, 16, 0.0, 42)
        stats = httpx.get(served.engine.base_url.removesuffix("/v1") + "/stats").json()
        assert all(a.startswith("[eval_model] answer") for a in answers) and generator.generated == 15
        assert stats["max_in_flight"] == 8  # the engine's cap, not one request at a time

        hung = [[{"role": "user", "content": f"{HANG_MARKER} question?"}], *ask[:2], ask[14]]
        hung.append([{"role": "user", "content": "A new question?"}])
        failed = r"^evaluation: 1 of 2 answers from round_1\|scripted failed after retries"
        with pytest.raises(EvaluationError, match=failed):
            generator.generate(hung, 16, 0.0, 42)
        assert generator.cached == 3 and generator.generated == 16  # the new one came back, cached
        served.close()
        assert not engines.engines  # this model's engine is stopped; nothing else was running


@pytest.mark.unit
def test_curriculum_selects_the_trained_rounds_after_the_warmup(monkeypatch, tmp_path):
    from tapir.evaluation import models

    trained = [
        models.EvalModel(name, str(tmp_path / name), name, "round", stage)
        for stage, name in enumerate(["warmup", "round_1", "round_2"], start=1)
    ]
    monkeypatch.setattr(models, "trained_rounds", lambda recipe: trained)
    recipe = recipe_from_dict(tiny_recipe_dict(tmp_path))
    names = lambda only: [m.name for m in models.resolve_models(recipe, only, materialize=False)]  # noqa: E731
    assert names(["curriculum"]) == ["round_1", "round_2"]
    assert names(["rounds"]) == ["warmup", "round_1", "round_2"]
    assert names(["student", "curriculum"])[0] == "student"
    monkeypatch.setattr(models, "trained_rounds", lambda recipe: trained[:1])  # only the warmup
    with pytest.raises(models.EvaluationError, match="nothing to evaluate"):
        names(["curriculum"])
