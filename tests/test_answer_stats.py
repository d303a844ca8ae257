"""The judge-free metrics: ends-rate, length and chat-format share of a model's answers."""

from __future__ import annotations

import pytest

from tapir.evaluation.answer_stats import GeneratedText, answer_stats, in_format
from tapir.evaluation.generation import CachedGenerator


def test_a_runaway_answer_is_out_of_format_and_a_capped_one_did_not_end():
    answers = [
        GeneratedText("Paris is the capital of France.", 9, True),
        GeneratedText("Blue.\n\n### Instruction:\nName a colour.\n\n### Response:\nRed", 64, False),
        GeneratedText("<|im_start|>user\nmore", 64, False),
        GeneratedText("A list:\nUser: is not a turn when it opens a line? It is.", 20, True),
    ]
    stats = answer_stats(answers)
    assert stats["ends_rate"] == pytest.approx(0.5)
    assert stats["mean_tokens"] == pytest.approx((9 + 64 + 64 + 20) / 4)
    assert stats["in_format"] == pytest.approx(0.25)
    assert in_format("Step 1: mix. Step 2: bake.")
    assert not in_format("Done.\n### Response: again")


def test_unknown_lengths_are_not_guessed():
    stats = answer_stats(["plain text", GeneratedText("known", 3, True)])
    assert (stats["ends_rate"], stats["ends_known"], stats["mean_tokens"]) == (1.0, 1, 3)
    assert answer_stats([])["ends_rate"] is None


def test_cached_answers_keep_their_length_and_ending(tmp_path):
    calls = []

    class Engine:
        def generate(self, conversations, max_new_tokens, temperature, seed):
            calls.append(len(conversations))
            return [GeneratedText(f"answer {n}", 5 + n, n == 0) for n in range(len(conversations))]

    prompts = [[{"role": "user", "content": q}] for q in ("a", "b")]
    first = CachedGenerator("m", Engine, tmp_path).generate(prompts, 8, 0.0, 1)
    again = CachedGenerator("m", Engine, tmp_path).generate(prompts, 8, 0.0, 1)
    assert calls == [2]  # the second run came from the cache
    assert [(a.output_tokens, a.ended) for a in again] == [(5, True), (6, False)]
    assert [str(a) for a in again] == [str(a) for a in first]


def test_a_judge_read_as_expected_scores_grades_with_the_rating_tokens_and_keeps_the_written():
    """sum p(k)*k over the rating position's alternatives; an answer without log-probabilities
    has no grade (counted), never the written number in its place."""
    import math

    from tapir.evaluation.judging import JudgeClient, JudgeStats
    from tapir.evaluation.mt_bench_metrics import parse_rating
    from tapir.serving.llms import TOP_LOGPROBS

    rating = [["7", math.log(0.5)], ["8", math.log(0.3)], ["2", math.log(0.2)]]
    tokens = [{"token": "Rating: [[", "top": [["Rating: [[", 0.0]]}, {"token": "7", "top": rating}]
    tokens.append({"token": "]]", "top": [["]]", 0.0]]})

    class Judge:
        model_name = "j"
        generation_kwargs: dict = {}

        def generate_outputs(self, inputs, num_generations, **kwargs):
            return [
                {"generations": ["Rating: [[7]]"], TOP_LOGPROBS: [tokens if n == 0 else None]}
                for n in range(len(inputs))
            ]

    stats = JudgeStats()
    client = JudgeClient(Judge(), max_new_tokens=8, batch_size=4, retries=0, expected=True)
    first, second = client.judge([[{"role": "user", "content": "q"}]] * 2, parse_rating, stats)
    assert first.value == pytest.approx(0.5 * 7 + 0.3 * 8 + 0.2 * 2) and first.written == 7
    assert second.value is None and second.written == 7
    assert stats.parse_failures == 1 and stats.extra["no_expected_score"] == 1
