"""alpaca_eval's own annotator and OpenAI client, against a real OpenAI-compatible server
(llama.cpp's, serving the embedded GGUF) -- slow tier."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from rich.console import Console

from tapir.evaluation.run import run_eval
from tapir.serving.embedded import embedded_gguf_path

from .test_evaluation_run import INSTRUCTIONS, eval_recipe, tiny_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gguf = embedded_gguf_path(REPO / ".cache" / "tapir")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port)),
            *("--n_ctx", "4096", "--chat_format", "gemma"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama.cpp server did not start")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_alpaca_eval_annotator_config_runs_through_its_own_client(tmp_path, tiny_model, server, monkeypatch):  # noqa: F811
    from alpaca_eval.constants import EVALUATORS_CONFIG_DIR

    config = tmp_path / "local_server" / "configs.yaml"
    config.parent.mkdir()
    # alpaca_eval's default prompt; the server's grammar (sent as extra_body) keeps the tiny
    # model's verdict to "m" or "M", which alpaca_eval's regex parser reads.
    config.write_text(
        f"""local_server:
  prompt_template: "{EVALUATORS_CONFIG_DIR}/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
  fn_completions: "openai_completions"
  completions_kwargs:
    model_name: "embedded-gemma"
    max_tokens: 2
    temperature: 0
    extra_body:
      grammar: 'root ::= "m" | "M"'
  fn_completion_parser: "regex_parser"
  completion_parser_kwargs:
    outputs_to_match:
      1: '(?:^|\\s)m(?:$|\\s)'
      2: '(?:^|\\s)M(?:$|\\s)'
  batch_size: 1
"""
    )
    monkeypatch.setenv("OPENAI_API_BASE", server)
    monkeypatch.setenv("OPENAI_API_KEY", "not-needed")
    recipe = eval_recipe(tmp_path, tiny_model, alpaca_eval_annotator=f"alpaca_eval:{config}")
    out = run_eval(recipe, Console(quiet=True))
    annotations = pd.read_json(out / tiny_model.name / "alpaca_eval" / "annotations.json")
    assert len(annotations) == len(INSTRUCTIONS)
    assert set(annotations["annotator"]) == {"local_server"}
    assert set(annotations["preference"].dropna()) <= {1.0, 2.0}
    assert annotations["preference"].notna().all()
    board = pd.read_csv(out / "leaderboard.csv")
    assert board.loc[board["model"] == tiny_model.name, "n_total"].item() == len(INSTRUCTIONS)
    assert "OPENAI_API_KEY" in os.environ  # the key never reaches our files
    assert "not-needed" not in (out / "summary.json").read_text()
