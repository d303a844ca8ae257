"""The embedded default from a clean clone with nothing beside it (slow tier): `git clone` into an
empty folder (no ../shared), then `make data`, `make train`, `make eval` as a user runs them,
offline, with the real Gemma 3 270M and small settings. The clone uses this checkout's venv
(``make -o .venv/.installed``: installing again is not what is tested)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tapir.evaluation import html_report

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# One set of overrides for all three verbs: train refuses data made with other data settings.
SMALL = [
    "seeds.limit=4",
    "teacher.generation.max_new_tokens=24",
    "student.generation.max_new_tokens=16",
    "expansion.budget=1",
    "expansion.per_hard_seed=1",
    "expansion.max_hard_seeds=1",
    "expansion.max_new_tokens=24",
    "refinement.max_new_tokens=24",
    "curriculum.rounds=1",
    "curriculum.hard_share=[0.0]",  # the tiny judge finds few hard rows; a round of easy ones
    "curriculum.round_size=2",
    "curriculum.warmup_size=1",
    "training.max_steps=1",
    "training.max_length=128",
    "evaluation.models=[student,rounds]",
    "evaluation.alpaca_eval.limit=3",
    "evaluation.alpaca_eval.max_new_tokens=16",
    "evaluation.mt_bench.max_new_tokens=16",
    "evaluation.mt_bench.per_category=1",
]


def _make(clone: Path, verb: str, timeout: int) -> subprocess.CompletedProcess:
    args = " ".join(f"--set {item}" for item in SMALL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        ["make", "-o", ".venv/.installed", verb, f"ARGS={args}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Lines only a native library or a progress bar writes: llama.cpp's loader and quantizer,
# scikit-learn / liblinear, datasets' (and transformers') progress bars. None may reach the user.
FOREIGN = re.compile(
    r"llama_model_loader|llama_model_quantize|llama_|ggml_|gguf_init|load_tensors|print_info:|"
    r"not divisible by 256|specified in weight is not found|ConvergenceWarning|"
    r"Generating \w+ split|Creating parquet from Arrow|Map( \(num_proc=\d+\))?:|Filter:|Saving the dataset|"
    r"Casting the dataset|Loading checkpoint shards|Converting and de-quantizing GGUF|Loading weights|"
    r"Writing model shards"
)


def _foreign(result: subprocess.CompletedProcess) -> list[str]:
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if FOREIGN.search(line)][:10]


def test_a_clean_clone_runs_data_train_eval_offline(tmp_path):
    clone = tmp_path / "empty" / "tapir-distill"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (clone.parent.parent / "shared").exists() and not (clone.parent / "shared").exists()
    (clone / ".venv").symlink_to(REPO / ".venv")

    data = _make(clone, "data", 1500)
    assert data.returncode == 0, data.stdout[-2000:] + data.stderr[-3000:]
    assert _foreign(data) == []  # the console is for a person: native chatter goes to log files
    run = clone / "outputs" / "embedded-default"
    summary = json.loads((run / "summary.json").read_text())
    usage = summary["usage"]
    assert 4 <= usage["student"]["calls"] <= 5 and usage["teacher"]["output_tokens"] > 0
    # two grades per row; the labels come from the offline classifier, which calls no LLM
    assert usage["judge"]["calls"] == 2 * usage["student"]["calls"]
    assert summary["classifier"]["kind"] == "offline" and summary["classifier"]["held_out_accuracy"] > 0.5
    assert summary["judging"]["scoring"] == "expected"
    # The grammar makes every embedded judge / classifier answer parse.
    assert summary["parse_failures"]["judge grade of teacher"] == 0
    assert summary["parse_failures"]["task label"] == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert (
        manifest["schema_version"] == 1 and "SmolLM2-135M-Instruct" in manifest["models"]["teacher"]["model"]
    )
    assert "gemma-3-270m" in manifest["models"]["student"]["model"]  # an instruct teacher, a base student
    assert manifest["data_settings"]["curriculum.hard_share"] == [0.0]

    again = _make(clone, "data", 600)  # an unchanged re-run is answered from the caches
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["llm_calls_this_run"] == 0

    train = _make(clone, "train", 1500)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    assert _foreign(train) == []
    rounds = clone / "outputs" / "embedded-default-checkpoints"
    assert (rounds / "round_1" / "model" / "tapir_checkpoint.json").is_file()
    # warm-up first (the default): round 1 was built from the warmed-up student's grades
    rescored = rounds / "warmup" / "rescored"
    graded = json.loads((rescored / "summary.json").read_text())["judging"]["student"]
    assert graded.endswith("embedded-default-checkpoints/warmup/model-Q4_K_M.gguf")
    trained_on = json.loads((rounds / "round_1" / "manifest.json").read_text())["data"]["path"]
    assert trained_on.endswith("embedded-default-checkpoints/warmup/rescored/data/round_1.parquet")
    metrics = json.loads((rounds / "round_1" / "manifest.json").read_text())["metrics"]
    assert metrics["global_step"] == 1 and metrics["final_loss"] > 0  # no LR warm-up: step 1 trains
    base = load_file(next((clone / ".cache" / "tapir" / "models" / "gemma-3-270m-hf").glob("*.safetensors")))
    trained = load_file(next((rounds / "round_1" / "model").glob("*.safetensors")))
    layer = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[layer], trained[layer])

    evaluated = _make(clone, "eval", 1500)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-3000:]
    assert _foreign(evaluated) == []
    out = clone / "outputs" / "embedded-default-eval"
    board = pd.read_csv(out / "leaderboard.csv")
    ours = board[board["kind"].isin(["student", "round"])].set_index("model")
    assert {"student", "round_1"} <= set(ours.index)
    for name in ("student", "round_1"):
        assert ours.loc[name, "n_total"] == 3  # the grammar lets the tiny judge answer only m or M
        assert 0 <= ours.loc[name, "win_rate"] <= 100 and 1 <= ours.loc[name, "mt_bench"] <= 10
        assert ours.loc[name, "judge_parse_failures"] == 0
        assert ours.loc[name, "mt_bench_scoring"] == "expected"  # a judge tapir serves
        assert 0 <= ours.loc[name, "ae_ends_rate"] <= 1 and ours.loc[name, "ae_mean_tokens"] <= 16
    result = json.loads((out / "summary.json").read_text())["results"]["student"]
    assert result["generation"]["backend"] == "llamacpp:Q4_K_M"
    health = result["alpaca_eval"]["judge_health"]
    assert health["judgments"] == 3 and set(health["usage"]) >= {"calls", "input_tokens", "output_tokens"}
    assert result["alpaca_eval"]["metrics"]["length_controlled_winrate"] is None  # 3 < alpaca_eval's 5 folds
    assert result["mt_bench"]["metrics"]["n_judgments"] == 16
    if html_report.chromium_binary() or os.environ.get("CI"):
        assert html_report.check_renders(out / "report.html")["rendered"] == "yes"
