"""MT-Bench for one model: two-turn answers, then fschat's single-answer grading per turn.

Files follow fschat's layout (``model_answer/<model>.jsonl``, ``model_judgment/<judge>_single
.jsonl`` records), so FastChat's ``show_result.py`` reads them as well.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from fastchat.llm_judge.common import load_judge_prompts, load_questions

from tapir.benchmark_sources import read_records, resolve
from tapir.errors import DataError, EvaluationError
from tapir.evaluation import mt_bench_metrics
from tapir.evaluation.answer_stats import answer_stats
from tapir.evaluation.generation import Generator
from tapir.evaluation.judging import JudgeClient, JudgeStats
from tapir.manifest import write_json
from tapir.recipe import MTBenchSettings

FIELD = "evaluation.mt_bench"


class MTBenchData:
    """Questions (optionally the first N per category), fschat's judge prompts, references."""

    def __init__(self, settings: MTBenchSettings, cache_dir: str | Path) -> None:
        path = resolve(settings.questions, f"{FIELD}.questions", cache_dir)
        try:
            questions = load_questions(str(path), None, None)
        except (ValueError, UnicodeDecodeError) as exc:  # fschat reads JSON lines as they come
            raise DataError(f"{FIELD}.questions: {path} is not JSON lines ({type(exc).__name__})") from None
        for q in questions:
            if not isinstance(q, dict):
                raise DataError(f"{FIELD}.questions: {path} holds a {type(q).__name__}, not question records")
            if len(q.get("turns", [])) != 2 or not all(str(t).strip() for t in q["turns"]):
                raise DataError(
                    f"{FIELD}.questions: question {q.get('question_id')} needs two non-empty turns"
                )
        if settings.per_category is not None:
            seen: dict[str, int] = {}
            kept = []
            for q in questions:
                seen[q["category"]] = seen.get(q["category"], 0) + 1
                if seen[q["category"]] <= settings.per_category:
                    kept.append(q)
            questions = kept
        self.questions = questions
        self.prompts = load_judge_prompts(
            str(resolve(settings.judge_prompts, f"{FIELD}.judge_prompts", cache_dir))
        )
        missing = sorted(set(mt_bench_metrics.PROMPT_NAMES.values()) - set(self.prompts))
        if missing:
            raise DataError(f"{FIELD}.judge_prompts: missing fschat prompt(s) {', '.join(missing)}")
        field = f"{FIELD}.reference_answers"
        self.references = {
            r["question_id"]: r["choices"][0]["turns"]
            for r in read_records(resolve(settings.reference_answers, field, cache_dir), field)
        }


def generate(
    data: MTBenchData, generator: Generator, settings: MTBenchSettings, seed: int
) -> dict[int, list[str]]:
    """Both turns for every question; each category at its own temperature, batched per turn."""
    answers: dict[int, list[str]] = {q["question_id"]: [] for q in data.questions}
    by_temperature: dict[float, list[dict[str, Any]]] = {}
    for q in data.questions:
        by_temperature.setdefault(settings.temperatures.get(q["category"], 0.7), []).append(q)
    for temperature, questions in sorted(by_temperature.items()):
        for turn in (0, 1):
            conversations = []
            for q in questions:
                conversation: list[dict[str, str]] = []
                for earlier in range(turn):
                    conversation += [
                        {"role": "user", "content": q["turns"][earlier]},
                        {"role": "assistant", "content": answers[q["question_id"]][earlier]},
                    ]
                conversations.append([*conversation, {"role": "user", "content": q["turns"][turn]}])
            for q, answer in zip(
                questions, generator.generate(conversations, settings.max_new_tokens, temperature, seed)
            ):
                answers[q["question_id"]].append(answer)
    return answers


def judge_answers(
    data: MTBenchData, answers: dict[int, list[str]], judge: JudgeClient, name: str, stats: JudgeStats
) -> pd.DataFrame:
    jobs = []
    for q in data.questions:
        for turn in (1, 2):
            prompt_name, messages = mt_bench_metrics.judge_messages(
                q, answers[q["question_id"]], data.prompts, data.references.get(q["question_id"]), turn
            )
            jobs.append((q, turn, prompt_name, messages))
    verdicts = judge.judge([j[3] for j in jobs], mt_bench_metrics.parse_rating, stats)
    return pd.DataFrame(
        [
            {
                "question_id": q["question_id"],
                "category": q["category"],
                "model": name,
                "judge": [judge.model_id, prompt_name],
                "user_prompt": messages[-1]["content"],
                "judgment": v.text,
                "score": v.value,
                "written_score": v.written,
                "turn": turn,
                "attempts": v.attempts,
                "tstamp": time.time(),
            }
            for (q, turn, prompt_name, messages), v in zip(jobs, verdicts)
        ]
    )


def evaluate(
    name: str,
    generator: Generator,
    judge: JudgeClient,
    settings: MTBenchSettings,
    data: MTBenchData,
    out_dir: Path,
    seed: int,
    on_judging: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Answer, judge and score one model; write fschat's files and ``metrics.json``."""
    answers = generate(data, generator, settings, seed)
    if on_judging:
        on_judging(2 * len(data.questions))
    stats = JudgeStats()
    judgments = judge_answers(data, answers, judge, name, stats)
    if judgments["score"].notna().sum() == 0:
        raise EvaluationError(
            f"judge: none of the {len(judgments)} MT-Bench judgments for {name} could be parsed "
            f"({stats.last_error or 'see model_judgment/ for the texts'})"
        )
    summary = mt_bench_metrics.summarize(judgments)
    summary["answers"] = answer_stats([a for q in data.questions for a in answers[q["question_id"]]])
    scores = judgments["score"].dropna()
    health = {
        **stats.health(),
        # expected grades are continuous: counted by their nearest whole grade
        "score_histogram": {
            str(int(k)): int(v) for k, v in scores.round().astype(int).value_counts().sort_index().items()
        },
        "score_std": float(scores.std()) if len(scores) > 1 else 0.0,
    }
    (out_dir / "model_answer").mkdir(parents=True, exist_ok=True)
    (out_dir / "model_judgment").mkdir(parents=True, exist_ok=True)
    with (out_dir / "model_answer" / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
        for q in data.questions:
            record = {
                "question_id": q["question_id"],
                "model_id": name,
                "choices": [{"index": 0, "turns": [str(a) for a in answers[q["question_id"]]]}],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    judgments.to_json(out_dir / "model_judgment" / "judge_single.jsonl", orient="records", lines=True)
    scoring = "expected" if judge.expected else "written"
    result = {"metrics": {**summary, "scoring": scoring}, "judge_health": health}
    write_json(out_dir / "metrics.json", result)
    return result
