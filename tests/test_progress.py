"""The live step lines: read from the usage records as they grow (a half-written line waits),
rows against the plan, output tokens/s, ETA, retries and failures, and spend when priced."""

from __future__ import annotations

import json

from rich.console import Console

from tapir.pipelines.progress import UsageTail, render


def _record(step: str, role: str, rows: int, calls: int, out: int, t: float, **extra) -> str:
    return (
        json.dumps(
            {
                "step": step,
                "role": role,
                "rows": rows,
                "calls": calls,
                "input_tokens": 1000 * calls,
                "output_tokens": out,
                "seconds": 2.0,
                "time": t,
                **extra,
            }
        )
        + "\n"
    )


def _text(table) -> str:
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()


def test_step_lines_follow_the_usage_records(tmp_path):
    teacher = tmp_path / "usage.teacher.1.jsonl"
    judge = tmp_path / "usage.judge.2.jsonl"
    teacher.write_text(_record("respond_teacher", "teacher", 8, 8, 400, 102.0))
    judge.write_text(
        _record("judge_teacher", "judge", 8, 8, 40, 103.0, retries=3, failed_calls=1)
        + '{"step": "judge_teacher", "rows": 8'
    )  # a line still being written
    tail = UsageTail(tmp_path)
    steps = tail.poll()
    assert steps["respond_teacher"].rows == 8 and steps["judge_teacher"].rows == 8
    text = _text(
        render(
            steps,
            {"respond_teacher": 16, "judge_teacher": 8},
            {"teacher": {"input": 1.0, "output": 2.0}},
            104.0,
        )
    )
    assert "8/16" in text and "8/8" in text and "done" in text and "3/1" in text
    assert "$0.0088" in text  # 8,000 input tokens at $1/M + 400 output at $2/M
    assert "100.0" in text  # 400 tokens over the 4 s since the first batch started
    # the rest of the half-written line arrives: counted once, not twice
    with judge.open("a") as handle:
        handle.write(', "calls": 8, "output_tokens": 40, "seconds": 1, "time": 104.0}\n')
    with teacher.open("a") as handle:
        handle.write(_record("respond_teacher", "teacher", 8, 0, 0, 104.5))  # a cached batch: 0 calls
    steps = tail.poll()
    assert (steps["judge_teacher"].rows, steps["judge_teacher"].calls) == (16, 16)
    assert (steps["respond_teacher"].rows, steps["respond_teacher"].calls) == (16, 8)
    final = _text(render(steps, {"expand_instructions": 40}, {}, 200.0, final=True))
    assert final.count("done") == 2
