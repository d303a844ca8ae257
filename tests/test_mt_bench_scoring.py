"""MT-Bench grading follows fschat: same prompts, same score parsing, hand-checked aggregation."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from fastchat.llm_judge import common
from fastchat.llm_judge.common import Judge, load_judge_prompts, load_questions

from tapir.evaluation import mt_bench_metrics

from .conftest import SHARED_DATA

MT = SHARED_DATA / "mt_bench"

# Real-looking judge outputs: GPT-4 style explanations ending in the rating, and the ways they go wrong.
JUDGMENTS = {
    "clean": "The assistant's answer is accurate and well organised. Rating: [[8]]",
    "decimal": "Helpful but slightly verbose.\n\nRating: [[7.5]]",
    "backup": "The response misses the second part of the question. Rating: [4]",
    "both": "Compared with the reference [1], the answer is correct. Rating: [[9]]",
    "none": "I would rate this answer as quite good overall.",
    "empty": "",
}


def _fschat_rating(
    judgment: str, question: dict, answer_turns: list[str], judge: Judge, ref, multi_turn: bool
):
    """fschat's own run_judge_single with its API call replaced by a canned judgment."""
    seen = {}

    def fake_call(model, conv, temperature, max_tokens):
        seen["system"] = conv.system_message
        seen["user"] = conv.messages[0][1]
        return judgment

    original = common.chat_completion_openai
    common.chat_completion_openai = fake_call
    try:
        answer = {"choices": [{"turns": answer_turns}]}
        rating, _, _ = common.run_judge_single(question, answer, judge, ref, multi_turn=multi_turn)
    finally:
        common.chat_completion_openai = original
    return rating, seen


@pytest.mark.parametrize("case", sorted(JUDGMENTS))
@pytest.mark.parametrize("question_id,turn", [(81, 1), (81, 2), (111, 1), (111, 2)])
def test_prompts_and_parsing_match_fschat(case, question_id, turn):
    questions = {q["question_id"]: q for q in load_questions(str(MT / "question.jsonl"), None, None)}
    prompts = load_judge_prompts(str(MT / "judge_prompts.jsonl"))
    references = {
        r["question_id"]: r for r in (json.loads(x) for x in (MT / "reference_answer" / "gpt-4.jsonl").open())
    }
    question = questions[question_id]
    answers = ["First answer with {braces} kept.", "Second answer."]
    reference = references.get(question_id)

    name, messages = mt_bench_metrics.judge_messages(
        question, answers, prompts, reference["choices"][0]["turns"] if reference else None, turn
    )
    judge = Judge("gpt-4", prompts[name], ref_based=reference is not None, multi_turn=turn == 2)
    fschat_rating, seen = _fschat_rating(JUDGMENTS[case], question, answers, judge, reference, turn == 2)

    assert messages[0] == {"role": "system", "content": seen["system"]}
    assert messages[1] == {"role": "user", "content": seen["user"]}
    ours = mt_bench_metrics.parse_rating(JUDGMENTS[case])
    assert (ours if ours is not None else -1) == fschat_rating
    assert name == mt_bench_metrics.PROMPT_NAMES[(reference is not None, turn == 2)]


def test_reference_prompts_for_math_reasoning_coding():
    prompts = load_judge_prompts(str(MT / "judge_prompts.jsonl"))
    question = {"question_id": 111, "category": "math", "turns": ["q1", "q2"]}
    name, messages = mt_bench_metrics.judge_messages(question, ["a1", "a2"], prompts, ["r1", "r2"], 2)
    assert name == "single-math-v1-multi-turn"
    assert "r1" in messages[-1]["content"] and "r2" in messages[-1]["content"]
    with pytest.raises(Exception, match="reference_answers"):
        mt_bench_metrics.judge_messages(question, ["a1", "a2"], prompts, None, 1)


def test_aggregation_matches_a_hand_computation():
    rows = [
        # question, category, turn, judgment
        (81, "writing", 1, JUDGMENTS["clean"]),  # 8
        (81, "writing", 2, JUDGMENTS["decimal"]),  # 7.5
        (82, "writing", 1, JUDGMENTS["backup"]),  # 4
        (82, "writing", 2, JUDGMENTS["none"]),  # unparsed
        (111, "math", 1, JUDGMENTS["both"]),  # 9
        (111, "math", 2, "Rating: [[2]]"),  # 2
    ]
    table = pd.DataFrame(rows, columns=["question_id", "category", "turn", "judgment"])
    table["score"] = table["judgment"].map(mt_bench_metrics.parse_rating)
    summary = mt_bench_metrics.summarize(table)
    assert summary["turn_1"] == pytest.approx((8 + 4 + 9) / 3)
    assert summary["turn_2"] == pytest.approx((7.5 + 2) / 2)
    assert summary["overall"] == pytest.approx((8 + 7.5 + 4 + 9 + 2) / 5)
    assert summary["categories"] == {"math": pytest.approx(5.5), "writing": pytest.approx((8 + 7.5 + 4) / 3)}
    assert summary["n_parse_failures"] == 1 and summary["n_judgments"] == 6


@pytest.mark.integration
def test_score_mt_bench_command(tmp_path):
    path = tmp_path / "judgments.jsonl"
    records = [
        {"question_id": 81, "model": "m", "turn": 1, "judgment": JUDGMENTS["clean"], "score": -1},
        {"question_id": 81, "model": "m", "turn": 2, "judgment": JUDGMENTS["none"], "score": 5},
        {"question_id": 111, "model": "m", "turn": 1, "judgment": "Rating: [[3]]", "score": 3},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    command = [sys.executable, "-m", "tapir.cli", "eval", "score-mt-bench", "--judgments", str(path)]
    missing = subprocess.run(command, capture_output=True, text=True)
    assert missing.returncode == 2 and "--questions" in missing.stderr
    done = subprocess.run(
        [*command, "--questions", str(MT / "question.jsonl")], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    # stored scores are ignored: the texts are re-parsed (8, unparsed, 3)
    assert result["overall"] == pytest.approx(5.5)
    assert result["categories"] == {"math": 3.0, "writing": 8.0}
    assert result["n_parse_failures"] == 1
