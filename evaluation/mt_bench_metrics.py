"""MT-Bench single-answer grading: fschat's judge prompts in, fschat's score parsing out.

fschat's ``run_judge_single`` builds the prompt, calls the judge through the pre-1.0 openai
client (which conflicts with alpaca_eval's openai>=1) and parses ``[[rating]]``. We keep its
prompt construction and parsing -- same format calls, same regular expressions, imported from
fschat -- and send the prompt through our own judge client instead.
"""

from __future__ import annotations

import ast
from typing import Any

import pandas as pd
from fastchat.llm_judge.common import NEED_REF_CATS, one_score_pattern, one_score_pattern_backup

from tapir.errors import DataError

#: fschat's judge prompt names (gen_judgment.make_judge_single).
PROMPT_NAMES = {
    (False, False): "single-v1",
    (True, False): "single-math-v1",
    (False, True): "single-v1-multi-turn",
    (True, True): "single-math-v1-multi-turn",
}


def needs_reference(category: str) -> bool:
    return category in NEED_REF_CATS


def judge_messages(
    question: dict[str, Any],
    answers: list[str],
    prompts: dict[str, dict[str, Any]],
    reference: list[str] | None,
    turn: int,
) -> tuple[str, list[dict[str, str]]]:
    """(prompt name, chat messages) for grading ``turn`` (1 or 2) exactly as fschat formats it."""
    multi_turn = turn == 2
    use_reference = needs_reference(question["category"])
    if use_reference and reference is None:
        raise DataError(
            f"mt_bench.reference_answers: no reference answer for question {question['question_id']}"
        )
    name = PROMPT_NAMES[(use_reference, multi_turn)]
    template = prompts[name]
    kwargs: dict[str, str] = {}
    if use_reference and reference is not None:
        kwargs["ref_answer_1"] = reference[0]
        if multi_turn:
            kwargs["ref_answer_2"] = reference[1]
    if multi_turn:
        user = template["prompt_template"].format(
            question_1=question["turns"][0],
            question_2=question["turns"][1],
            answer_1=answers[0],
            answer_2=answers[1],
            **kwargs,
        )
    else:
        user = template["prompt_template"].format(question=question["turns"][0], answer=answers[0], **kwargs)
    messages = [{"role": "user", "content": user}]
    if template["system_prompt"]:
        messages.insert(0, {"role": "system", "content": template["system_prompt"]})
    return name, messages


def parse_rating(judgment: str | None) -> float | None:
    """The score in ``[[n]]`` (else ``[n]``), as fschat reads it; None when there is none.

    fschat writes -1 for an unparsable judgment; we keep None so callers count it instead.
    """
    if not judgment:
        return None
    match = one_score_pattern.search(judgment) or one_score_pattern_backup.search(judgment)
    if not match:
        return None
    return float(ast.literal_eval(match.groups()[0]))


def summarize(judgments: pd.DataFrame) -> dict[str, Any]:
    """Per-turn, per-category and overall means over parsed scores (fschat's show_result drops
    score -1 rows; we drop unparsed ones and say how many)."""
    missing = [c for c in ("question_id", "turn", "category", "score") if c not in judgments.columns]
    if missing:
        raise DataError(f"judgments: missing column(s) {', '.join(missing)}")
    parsed = judgments[judgments["score"].notna()]
    result: dict[str, Any] = {
        "overall": _mean(parsed["score"]),
        # fschat reports none; over questions (each the mean of its parsed turns), for comparing runs
        "standard_error": _standard_error(parsed.groupby("question_id")["score"].mean()),
        "turn_1": _mean(parsed.loc[parsed["turn"] == 1, "score"]),
        "turn_2": _mean(parsed.loc[parsed["turn"] == 2, "score"]),
        "categories": {
            category: _mean(group["score"]) for category, group in parsed.groupby("category", sort=True)
        },
        "n_judgments": len(judgments),
        "n_parse_failures": int(judgments["score"].isna().sum()),
    }
    return result


def _standard_error(values: pd.Series) -> float | None:
    return float(values.std(ddof=1) / len(values) ** 0.5) if len(values) > 1 else None


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None
