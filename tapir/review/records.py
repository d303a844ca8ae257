"""What a reviewer sees in Argilla: the dataset settings and one record per sampled example.

Built with the Argilla SDK's own objects (``rg.Settings``, ``rg.Record``). Records are built offline;
the SDK binds settings to a connected client, so they are built at push time.

The questions map onto what the next ``tapir data`` can act on, and onto what the pipeline's
models decided, so reviewer/model agreement is measurable:

- ``task_label`` (label): the right task label -> overrides the classifier's.
- ``keep`` (label): keep or reject the example -> rejected rows leave the selection.
- ``student_falls_short`` (label): is the student's answer clearly worse than the teacher's?
  -> compared with the judge's hard/easy verdict (MFD >= delta).
- ``refined_better`` (rating 1-5): is the refined response better than the original?
- ``fix`` (text): a corrected response -> becomes the response trained on.
"""

from __future__ import annotations

import re
from typing import Any

import argilla as rg

from tapir.recipe import Recipe

TASK_LABEL, KEEP, FALLS_SHORT, REFINED_BETTER, FIX = (
    "task_label",
    "keep",
    "student_falls_short",
    "refined_better",
    "fix",
)
KEEP_OPTIONS = ["keep", "reject"]
YES_NO = ["yes", "no"]
RATINGS = [1, 2, 3, 4, 5]

GUIDELINES = """\
These examples were chosen for training a small student model by the TAPIR pipeline
({name}, {split}). A teacher model answered each instruction, the student model answered too,
a judge graded both (grades and MFD = teacher grade - student grade are shown), and a classifier
labelled the task. The *refined response* is what the student will be trained on.

- **Task label**: pick the label that fits the instruction (the classifier's choice is pre-filled
  when suggestions are on).
- **Keep?**: reject examples that should not be trained on (harmful, nonsensical, or whose
  every response is wrong and you do not write a fix).
- **Student falls short?**: *yes* when the student's answer is clearly worse than the teacher's.
- **Refined better?**: 1 = the refined response is much worse than the original teacher
  response, 3 = about the same, 5 = much better. Leave empty when there is no refined response.
- **Fix** (optional): write the response the student should learn, when the refined response is
  wrong. It replaces the training response in the next `make data`.
"""


def dataset_name(recipe: Recipe, split: str) -> str:
    return recipe.review.dataset.format(name=recipe.name, split=split)


#: Question names in the order reviewers see them (what --dry-run prints).
QUESTIONS = [TASK_LABEL, KEEP, FALLS_SHORT, REFINED_BETTER, FIX]


def build_settings(recipe: Recipe, split: str, client: rg.Argilla) -> rg.Settings:
    """The dataset's fields, questions and metadata. The SDK binds each to a connected client."""
    labels = list(recipe.taxonomy.labels)
    return rg.Settings(
        guidelines=GUIDELINES.format(name=recipe.name, split=split),
        fields=[
            rg.TextField(client=client, name="instruction", title="Instruction", use_markdown=True),
            rg.TextField(client=client, name="teacher_response", title="Teacher response", use_markdown=True),
            rg.TextField(
                client=client,
                name="refined_response",
                title="Refined response",
                use_markdown=True,
                required=False,
            ),
            rg.TextField(
                client=client,
                name="student_response",
                title="Student response",
                use_markdown=True,
                required=False,
            ),
            rg.TextField(
                client=client, name="grades", title="Judge grades, MFD and task label", use_markdown=True
            ),
        ],
        questions=[
            rg.LabelQuestion(
                client=client,
                name=TASK_LABEL,
                title="Is the task label right? Pick the right one.",
                labels=labels,
            ),
            rg.LabelQuestion(
                client=client, name=KEEP, title="Keep this example for training?", labels=KEEP_OPTIONS
            ),
            rg.LabelQuestion(
                client=client,
                name=FALLS_SHORT,
                title="Does the student's answer fall clearly short of the teacher's?",
                labels=YES_NO,
            ),
            rg.RatingQuestion(
                client=client,
                name=REFINED_BETTER,
                title="Is the refined response better than the original? (1 worse, 3 same, 5 better)",
                values=RATINGS,
                required=False,
            ),
            rg.TextQuestion(
                client=client,
                name=FIX,
                title="Corrected response (optional): what the student should learn",
                use_markdown=True,
                required=False,
            ),
        ],
        metadata=[
            rg.TermsMetadataProperty(client=client, name="task", title="Task label (classifier)"),
            rg.TermsMetadataProperty(client=client, name="difficulty", title="Difficulty (judge)"),
            rg.TermsMetadataProperty(client=client, name="stratum", title="Sampling stratum"),
            rg.TermsMetadataProperty(client=client, name="origin", title="Seed or expansion"),
            rg.FloatMetadataProperty(client=client, name="mfd", title="MFD"),
            rg.FloatMetadataProperty(client=client, name="teacher_score", title="Judge grade of teacher"),
            rg.FloatMetadataProperty(client=client, name="student_score", title="Judge grade of student"),
        ],
        distribution=rg.TaskDistribution(min_submitted=recipe.review.reviewers_per_record),
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _grades_markdown(row: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        return "-" if value is None else f"{float(value):g}"

    return "\n".join(
        [
            "| | |",
            "|---|---|",
            f"| judge grade of teacher | {show(row.get('teacher_score'))} |",
            f"| judge grade of student | {show(row.get('student_score'))} |",
            f"| MFD | {show(row.get('mfd'))} |",
            f"| difficulty | {row.get('difficulty') or '-'} |",
            f"| task label | {row.get('task') or '-'} |",
            f"| refine prompt | {row.get('refine_prompt') or '-'} |",
        ]
    )


def _instruction_text(row: dict[str, Any]) -> str:
    extra = (row.get("input") or "").strip()
    return row["instruction"] + (f"\n\n**Input:**\n\n{extra}" if extra else "")


def _agent(name: Any, fallback: str) -> str:
    """Argilla accepts letters, digits and ``-_:./`` and spaces in a suggestion's agent."""
    cleaned = " ".join(re.sub(r"[^A-Za-z0-9\-_:./\s]", " ", str(name or "")).split())
    return cleaned or fallback


def build_record(row: dict[str, Any], recipe: Recipe) -> rg.Record:
    """One sampled example as an Argilla record whose id is the pipeline's row id."""
    suggestions = []
    labels = set(recipe.taxonomy.labels)
    if recipe.review.suggestions:
        if row.get("task") in labels:
            suggestions.append(
                rg.Suggestion(
                    TASK_LABEL, row["task"], agent=_agent(row.get("classifier_model"), "classifier")
                )
            )
        if row.get("difficulty") in ("hard", "easy"):
            suggestions.append(
                rg.Suggestion(
                    FALLS_SHORT,
                    "yes" if row["difficulty"] == "hard" else "no",
                    agent=_agent(row.get("judge_model"), "judge"),
                )
            )
    metadata = {
        "task": row.get("task"),
        "difficulty": row.get("difficulty"),
        "stratum": row.get("review_stratum"),
        "origin": row.get("origin"),
        "mfd": _number(row.get("mfd")),
        "teacher_score": _number(row.get("teacher_score")),
        "student_score": _number(row.get("student_score")),
    }
    fields = {
        "instruction": _instruction_text(row),
        "teacher_response": row.get("teacher_response") or "",
        "refined_response": row.get("refined_response") or None,
        "student_response": row.get("student_response") or None,
        "grades": _grades_markdown(row),
    }
    return rg.Record(
        id=str(row["id"]),
        fields={k: v for k, v in fields.items() if v is not None},
        metadata={k: v for k, v in metadata.items() if v is not None},
        suggestions=suggestions,
    )


def check_rows(rows: list[dict[str, Any]], where: str) -> None:
    """Rows must carry what the record shows; say which column is missing, not a KeyError."""
    from tapir.errors import DataError

    needed = ("id", "instruction", "teacher_response", "task", "difficulty")
    if not rows:
        raise DataError(f"{where}: no rows to review")
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (not a tapir round file?)")
    empty = [str(r["id"]) for r in rows if not str(r.get("instruction") or "").strip()]
    if empty:
        raise DataError(f"{where}: empty instruction in row(s) {', '.join(empty[:5])}")
