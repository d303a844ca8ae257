"""The LLM steps of the TAPIR graph, as distilabel Tasks.

Each Task declares its input and output columns, renders its prompt from a template file and
parses the answer with one function from :mod:`tapir.pipelines.parsing`. A failed parse sets
the ``*_error`` column (the reason), which the run summary counts and the selection excludes.
"""

from typing import Any, Literal

from distilabel.steps import StepInput
from distilabel.steps.tasks import Task
from pydantic import Field

from tapir.expected_score import expected_score
from tapir.pipelines.parsing import (
    parse_expanded_instruction,
    parse_judge_score,
    parse_refined_response,
    parse_response,
    parse_task_label,
)
from tapir.pipelines.prompts import render
from tapir.serving.llms import CACHE_KEY, TOP_LOGPROBS

PLACEHOLDER = "placeholder"
#: How a grade that was never asked for begins (its answer failed): not a judge failure.
NOT_GRADED = "not graded"


def _prompt(template: str, input: dict[str, Any], **extra: Any) -> list[dict[str, str]]:
    """One user message: ``template`` rendered with the row's instruction and input, plus extras."""
    text = render(template, instruction=input["instruction"], input=input.get("input") or "", **extra)
    return [{"role": "user", "content": text}]


class PlaceholderAwareTask(Task):
    """Passes placeholder rows through without an LLM call.

    distilabel waits for a non-empty batch from every predecessor of a global step, so a
    selection that picks nothing (no hard seed, no valid expansion) sends one placeholder row
    instead of an empty batch; every step after it lets that row through untouched.
    """

    def process(self, inputs: StepInput) -> Any:  # type: ignore[override]
        real = [row for row in inputs if not row.get(PLACEHOLDER)]
        if not real:
            yield [{**row, **{name: None for name in self.outputs}} for row in inputs]
            return
        yield from super().process(real)

    def _format_outputs(self, outputs: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A call that failed for good (``failures``, from tapir's LLMs) puts its reason in the
        row's error column (the second output), not a bare "no output" nor an extra column."""
        failures = outputs.pop("failures", None) if isinstance(outputs, dict) else None
        key = outputs.pop(CACHE_KEY, None) if isinstance(outputs, dict) else None
        rows = super()._format_outputs(outputs, input)
        for row, reason in zip(rows, failures or []):
            if reason:
                row[self.outputs[1]] = f"call failed: {reason}"
        mark = getattr(self.llm, "mark_unparsed", None)
        if key and mark is not None and not failures and any(row.get(self.outputs[1]) for row in rows):
            mark(key)  # a real answer that did not parse: final, unless --reask-unparsed
        return rows


class ResponseGenerator(PlaceholderAwareTask):
    """Answers an instruction (teacher and student responses, METHOD steps 2-3)."""

    template: str = Field(..., description="Jinja text of the user prompt.")

    @property
    def inputs(self) -> dict[str, bool]:
        return {"instruction": True, "input": False}

    @property
    def outputs(self) -> list[str]:
        return ["response", "response_error", "model_name"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return _prompt(self.template, input)

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        parsed = parse_response(output)
        return {"response": parsed.value, "response_error": parsed.error}


class ResponseJudge(PlaceholderAwareTask):
    """Grades one response 1-10, MT-Bench single-answer style (the MFD oracle, step 4).

    ``scoring="expected"``: the grade is the expectation over the rating tokens' probabilities
    (:mod:`expected_score`, G-Eval) and ``written_score`` keeps the number the judge wrote; an
    answer without usable log-probabilities fails with its reason, like an unparsed grade.
    """

    template: str = Field(..., description="Jinja text of the judge prompt.")
    low: int = 1
    high: int = 10
    scoring: Literal["expected", "sampled"] = "sampled"
    answer_error_column: str | None = Field(
        None, description="The row's column saying why its answer failed: such rows are not graded."
    )

    def process(self, inputs: StepInput) -> Any:  # type: ignore[override]
        """A failed answer (no text) is not sent to the judge: the call would be paid for a grade
        of nothing. Its row says why it has no grade instead (``NOT_GRADED``)."""
        skipped = {
            n: str(row.get(self.answer_error_column or "") or "no answer")
            for n, row in enumerate(inputs)
            if not row.get(PLACEHOLDER) and not str(row.get("response") or "").strip()
        }
        if not skipped:
            yield from super().process(inputs)
            return
        graded: list[dict[str, Any]] = []
        rest = [row for n, row in enumerate(inputs) if n not in skipped]
        if rest:
            for batch in super().process(rest):
                graded.extend(batch)
        answers = iter(graded)
        rows = []
        for n, row in enumerate(inputs):
            if n not in skipped:
                rows.append(next(answers))
                continue
            error = f"{NOT_GRADED}: the answer failed ({skipped[n]})"
            rows.append(
                {**row, "score": None, "score_error": error, "written_score": None, "model_name": None}
            )
        yield rows

    @property
    def inputs(self) -> dict[str, bool]:
        return {"instruction": True, "input": False, "response": True}

    @property
    def outputs(self) -> list[str]:
        return ["score", "score_error", "model_name", "written_score"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return _prompt(self.template, input, response=input.get("response") or "")

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        parsed = parse_judge_score(output, self.low, self.high)
        return {"score": parsed.value, "score_error": parsed.error, "written_score": parsed.value}

    def _format_outputs(self, outputs: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        logprobs = outputs.pop(TOP_LOGPROBS, None) if isinstance(outputs, dict) else None
        key = outputs.get(CACHE_KEY) if isinstance(outputs, dict) else None
        rows = super()._format_outputs(outputs, input)
        if self.scoring != "expected":
            return rows
        unusable = False
        for row, tokens in zip(rows, logprobs or [None] * len(rows)):
            if row.get("score_error"):
                continue
            expected = expected_score(tokens, self.low, self.high)
            if expected.ok:
                assert expected.value is not None
                row["score"] = expected.value.value
            else:
                row["score"], row["score_error"] = None, f"expected score: {expected.error}"
                unusable = True
        mark = getattr(self.llm, "mark_unparsed", None)
        if unusable and key and mark is not None:
            mark(key)
        return rows


class TaskClassifier(PlaceholderAwareTask):
    """Gives each instruction one label of the recipe's taxonomy (step 5)."""

    template: str = Field(..., description="Jinja text of the classification prompt.")
    labels: list[str]
    fallback_label: str = "Others"

    @property
    def inputs(self) -> dict[str, bool]:
        return {"instruction": True, "input": False}

    @property
    def outputs(self) -> list[str]:
        return ["task", "task_error", "model_name"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return _prompt(self.template, input, labels=self.labels, fallback_label=self.fallback_label)

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        parsed = parse_task_label(output, self.labels)
        return {"task": parsed.value, "task_error": parsed.error}


class InstructionExpander(PlaceholderAwareTask):
    """Writes a new instruction in the task and style of a seed, or of a bare task label when
    the seed's instruction is empty (step 6; :mod:`expansion_plan` says which and how often).
    ``variant`` numbers repeated requests on one seed, so each is its own prompt."""

    template: str = Field(..., description="Jinja text of the expansion prompt.")

    @property
    def inputs(self) -> dict[str, bool]:
        return {"instruction": True, "input": False, "task": True, "variant": False}

    @property
    def outputs(self) -> list[str]:
        return ["expanded_instruction", "expansion_error", "model_name"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return _prompt(self.template, input, task=input.get("task") or "", variant=input.get("variant") or 0)

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        seed = (input or {}).get("instruction") or None
        parsed = parse_expanded_instruction(output, seed)
        return {"expanded_instruction": parsed.value, "expansion_error": parsed.error}


class TaskAwareRefiner(PlaceholderAwareTask):
    """Rewrites the teacher's response with a prompt chosen by task label (step 8).

    The original response stays in its column next to ``refined_response`` for ablations.
    """

    templates: dict[str, str] = Field(..., description="Template name -> Jinja text.")
    prompt_for_task: dict[str, str] = Field(default_factory=dict, description="Task label -> template name.")
    default_prompt: str = "refine_general"

    @property
    def inputs(self) -> dict[str, bool]:
        return {"instruction": True, "input": False, "response": True, "task": True}

    @property
    def outputs(self) -> list[str]:
        return ["refined_response", "refine_error", "refine_prompt", "model_name"]

    def prompt_name(self, task: str | None) -> str:
        return self.prompt_for_task.get(task or "", self.default_prompt)

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        template = self.templates[self.prompt_name(input.get("task"))]
        return _prompt(template, input, response=input.get("response") or "", task=input.get("task") or "")

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        parsed = parse_refined_response(output)
        return {
            "refined_response": parsed.value,
            "refine_error": parsed.error,
            "refine_prompt": self.prompt_name((input or {}).get("task")),
        }
