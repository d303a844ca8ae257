"""The command line as a user meets it: exit codes, one-line errors, no partial output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_recipe_dict

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def tapir(*args, cwd=REPO, env_extra=None, timeout: float = 300):
    """One `tapir` command in a subprocess, its output captured (arguments may be paths)."""
    import os

    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "tapir.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def write_recipe(tmp_path, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tapir: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_paper_recipe_dry_runs_offline():
    result = tapir(
        "data", "--recipe", "recipes/paper-llama2-7b.yaml", "--dry-run", env_extra={"OPENAI_API_KEY": ""}
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "52002 rows" in out and "distilabel ray" in out
    # Upper bound per role: 52002 seeds; every seed hard -> 2 expansions each.
    seeds, expanded = 52002, 104004
    assert f"{seeds + expanded:,}" in out  # student answers seeds and expansions
    assert f"{seeds + expanded + seeds + expanded + expanded:,}" in out  # teacher: answer+refine+expand
    assert "nothing was loaded or called" in out
    assert "OPENAI_API_KEY is not set" in out
    assert "$ expected" in out and "$ upper bound" in out and "│ total" in out


def test_paper_recipe_is_priced_per_role_and_a_cap_below_its_bound_refuses_it():
    plan = json.loads(
        tapir("data", "--recipe", "recipes/paper-llama2-7b.yaml", "--dry-run", "--json").stdout
    )["cost"]
    assert set(plan["roles"]) == {"teacher", "judge"}  # the student is the GPU's, not billed per token
    judge = plan["roles"]["judge"]
    assert 0 < judge["expected_usd"] < judge["upper_usd"]
    # 468,018 judge calls at the upper bound: input tokens and output tokens at gpt-4o's list price
    assert judge["price_per_million_tokens"] == {"input": 2.5, "output": 10.0}
    assert plan["upper_usd"] == pytest.approx(sum(r["upper_usd"] for r in plan["roles"].values()), abs=0.02)
    batched = json.loads(
        tapir(
            "data",
            "--recipe",
            "recipes/paper-llama2-7b.yaml",
            "--dry-run",
            "--json",
            "--set",
            "judge.batch=true",
        ).stdout
    )["cost"]
    assert batched["roles"]["judge"]["upper_usd"] == pytest.approx(judge["upper_usd"] / 2, abs=0.02)

    refused = tapir("data", "--recipe", "recipes/paper-llama2-7b.yaml", "--dry-run", "--max-spend", "1")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("tapir: error: pipeline.max_spend_usd: the plan may cost up to $")


def test_default_recipe_validates_and_lists_fields():
    result = tapir(
        "recipe", "validate", "--recipe", "recipes/default.yaml", "--set", "curriculum.carry_over=0.25"
    )
    assert result.returncode == 0, result.stderr
    assert "carry_over: 0.25" in result.stdout
    fields = tapir("recipe", "fields")
    assert "difficulty.delta" in fields.stdout and "curriculum.hard_share" in fields.stdout


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["--set", "judge.backend=ollama"], ["judge.backend"]),
        (["--set", "teacher.modle=x"], ["teacher.modle: unknown field"]),
        (["--set", "seeds.source=/nonexistent/seeds.jsonl"], ["seeds.source: file not found"]),
        (["--set", "seeds.instruction_column=prompt"], ["seeds.instruction_column", "'prompt'"]),
        (["--set", "student.model=/nonexistent/model.gguf"], ["student.model: GGUF file not found"]),
        (
            ["--set", "teacher.backend=openai", "--set", "teacher.base_url=http://127.0.0.1:9/v1"],
            ["teacher.base_url: cannot reach http://127.0.0.1:9/v1"],
        ),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, overrides, fragments):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path))
    result = tapir("data", "--recipe", recipe, *overrides)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_bad_yaml_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: : 1\n")
    assert_one_line_error(tapir("data", "--recipe", str(bad)), "invalid YAML (line 2")
    assert_one_line_error(tapir("data", "--recipe", str(tmp_path / "none.yaml")), "recipe file not found")


def test_openai_key_missing_for_openai_endpoint(tmp_path):
    recipe = write_recipe(
        tmp_path, tiny_recipe_dict(tmp_path, judge={"backend": "openai", "model": "gpt-4o"})
    )
    result = tapir("data", "--recipe", recipe, env_extra={"OPENAI_API_KEY": ""})
    assert_one_line_error(result, "judge.api_key_env: environment variable OPENAI_API_KEY is not set")


def test_dry_run_counts_local_seeds(tmp_path):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path))
    result = tapir("data", "--recipe", recipe, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "12 rows (counted in" in result.stdout
    assert not (tmp_path / "out").exists()
    assert json.dumps  # the dry run writes nothing


def test_paper_recipe_training_plan_dry_runs_offline():
    result = tapir("train", "--recipe", "recipes/paper-llama2-7b.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "global batch 128 = 4 per device x 4 accumulation x 8 device(s)" in out
    assert "lr 2e-05 cosine" in out and "max_length 2048" in out and "bf16" in out
    assert "re-scored after warmup" in out and "closed loop" in out
    assert "accelerate.commands.launch --config_file training/accelerate/deepspeed_zero3_8gpu.yaml" in out
    assert "training plan is valid" in out


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["training.bf16=true", "training.fp16=true"], ["training", "bf16 and fp16"]),
        (["training.launcher=accelerate"], ["training.accelerate_config", "required"]),
        (["training.lr_schedule=cosine"], ["training.lr_schedule", "unknown field"]),
        (
            ["training.accelerate_config=nope.yaml", "training.launcher=accelerate"],
            ["nope.yaml", "not found"],
        ),
    ],
)
def test_bad_training_settings_are_one_line(tmp_path, overrides, fragments):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path))
    args = [a for o in overrides for a in ("--set", o)]
    assert_one_line_error(tapir("train", "--recipe", recipe, "--dry-run", *args), *fragments)


def test_train_without_data_says_run_make_data(tmp_path):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path, training={"model": str(tmp_path)}))
    result = tapir("train", "--recipe", recipe)
    assert_one_line_error(result, "output_dir", "no finished data run", "make data")
    assert not (tmp_path / "out-checkpoints").exists()


def test_paper_recipe_eval_plan_dry_runs_offline():
    result = tapir("eval", "--recipe", "recipes/paper-llama2-7b.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "AlpacaEval 2.0: 805 instructions, annotator alpaca_eval:weighted_alpaca_eval_gpt4_turbo" in out
    assert "MT-Bench: 10 question(s) per category" in out
    assert "(downloaded at run time)" in out and "answers by vllm" in out
    assert "meta-llama--Llama-2-7b-chat-hf" in out and "baseline" in out


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["evaluation.alpaca_eval.annotator=gpt4"], ["evaluation", "alpaca_eval:<annotator config>"]),
        (["evaluation.alpaca_eval.annotator=alpaca_eval:nope"], ["evaluation.alpaca_eval.annotator", "nope"]),
        (["evaluation.mt_bench.questions=missing.jsonl"], ["evaluation.mt_bench.questions", "not found"]),
        (["evaluation.published=[nobody]"], ["evaluation.published", "nobody"]),
        (["evaluation.models=[./no/such/folder]"], ["evaluation.models", "not found"]),
    ],
)
def test_bad_evaluation_settings_are_one_line(tmp_path, overrides, fragments):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path, evaluation={"models": ["student"]}))
    args = [a for o in overrides for a in ("--set", o)]
    assert_one_line_error(tapir("eval", "--recipe", recipe, "--dry-run", *args), *fragments)


def test_eval_without_models_says_what_to_do(tmp_path):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path))
    assert_one_line_error(tapir("eval", "--recipe", recipe, "--dry-run"), "evaluation.models", "make train")


def test_review_and_push_errors_are_one_line(tmp_path):
    recipe = write_recipe(tmp_path, tiny_recipe_dict(tmp_path))
    no_server = {"ARGILLA_API_URL": "", "ARGILLA_API_KEY": ""}
    assert_one_line_error(
        tapir("review", "push", "--recipe", recipe, env_extra=no_server),
        "output_dir: no finished data run",
    )
    assert_one_line_error(
        tapir("review", "pull", "--recipe", recipe, env_extra=no_server), "review.argilla.api_url: not set"
    )
    assert_one_line_error(
        tapir("review", "pull", "--recipe", recipe, "--round", "9", env_extra=no_server),
        "review.round: 9 is not a round of this curriculum",
    )
    assert_one_line_error(
        tapir("push", "--recipe", recipe, "--dry-run", "--round", "warmup"), "no finished data run in"
    )
    assert not list(tmp_path.glob("out*"))


def test_piped_tables_never_cut_a_name_short():
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    for verb in ("ablate", "data"):
        piped = subprocess.run(
            [sys.executable, "-m", "tapir.cli", verb, "--dry-run"],
            cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert piped.returncode == 0, piped.stderr
        assert "…" not in piped.stdout, [line for line in piped.stdout.splitlines() if "…" in line]
        if verb == "ablate":
            assert "│ no_rebalance " in piped.stdout  # the arm's whole name


@pytest.mark.e2e  # a whole dry-run's start-up: kept out of test-quick
def test_a_recipe_read_from_a_pipe_is_read_once_and_planned(tmp_path):
    import os

    text = yaml.safe_dump(tiny_recipe_dict(tmp_path, name="from-a-pipe"))
    result = subprocess.run(
        [sys.executable, "-m", "tapir.cli", "data", "--recipe", "/dev/stdin", "--dry-run"],
        cwd=REPO,
        input=text,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "from-a-pipe" in result.stdout and "recipe valid" in result.stdout
