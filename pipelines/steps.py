"""The non-LLM steps of the TAPIR graph: difficulty, selection, re-balancing, curriculum.

Global steps see all rows at once (selection and resampling need the whole pool); the pure
logic lives in :mod:`rebalance` and :mod:`curriculum` so it is tested without distilabel.
Rows are never dropped silently: an excluded row keeps its ``excluded_reason`` in the pool
that the run summary reads.
"""

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from distilabel.steps import GlobalStep, LoadDataFromDicts, Step, StepInput
from pydantic import Field, PrivateAttr

from tapir.errors import DataError
from tapir.pipelines.curriculum import plan_curriculum
from tapir.pipelines.expansion_plan import plan_expansion
from tapir.pipelines.prompts import render
from tapir.pipelines.rebalance import rebalance
from tapir.stage_contract import WARMUP, round_split

HARD, EASY, EXCLUDED = "hard", "easy", "excluded"
PLACEHOLDER = "placeholder"
# Set on the placeholder row a global step yields when the recipe asks what the rows cannot
# give: distilabel would log the step's exception and go on with no rows, losing the reason.
STEP_ERROR = "step_error"
METADATA = "distilabel_metadata"
EXPANDED_SUFFIX = "_expanded"

# (column with the failure reason, what failed) in the order they are reported.
FAILURE_COLUMNS = [
    ("teacher_response_error", "teacher response"),
    ("student_response_error", "student response"),
    ("teacher_score_error", "judge grade of teacher"),
    ("student_score_error", "judge grade of student"),
    ("task_error", "task label"),
]


class LoadSeedRows(LoadDataFromDicts):
    """The seed rows, with a hash of their content in the step's signature.

    distilabel leaves ``data`` out of the signature, so a changed seed file or ``seeds.limit``
    looked like an exact re-run and its cache replayed the previous seeds' rows.
    """

    rows_sha256: str = Field("", description="sha256 of the seed rows (set from ``data``).")

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if self.data and not self.rows_sha256:
            canonical = json.dumps(self.data, sort_keys=True, default=str, ensure_ascii=False)
            self.rows_sha256 = hashlib.sha256(canonical.encode()).hexdigest()


def placeholder_row() -> dict[str, Any]:
    """Stands in for "no rows" (see PlaceholderAwareTask): distilabel stalls on empty batches."""
    return {"id": "__placeholder__", "instruction": "", "input": "", "task": None, PLACEHOLDER: True}


def real_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if not row.get(PLACEHOLDER)]


class ModelFittingDifficulty(Step):
    """MFD(x) = judge(teacher) - judge(student); hard when MFD >= delta (METHOD step 4).

    ``>=`` as Lion (the method TAPIR builds on) uses it: with integer grades and delta 1, a
    one-point gap is hard (``>`` would need two).

    A row whose grades or label failed to parse gets ``difficulty = "excluded"`` and the reason:
    it is kept out of the selection, never scored as 0.
    """

    delta: float = 1.0
    min_teacher_score: float | None = None

    @property
    def inputs(self) -> list[str]:
        return ["teacher_score", "student_score", *[c for c, _ in FAILURE_COLUMNS]]

    @property
    def outputs(self) -> list[str]:
        return ["mfd", "difficulty", "excluded_reason"]

    def classify_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get(PLACEHOLDER):
            return {"mfd": None, "difficulty": EXCLUDED, "excluded_reason": "placeholder"}
        for column, what in FAILURE_COLUMNS:
            if row.get(column):
                return {"mfd": None, "difficulty": EXCLUDED, "excluded_reason": f"{what}: {row[column]}"}
        teacher, student = row["teacher_score"], row["student_score"]
        if self.min_teacher_score is not None and teacher < self.min_teacher_score:
            return {
                "mfd": None,
                "difficulty": EXCLUDED,
                "excluded_reason": f"teacher score {teacher:g} below min_teacher_score",
            }
        mfd = float(teacher) - float(student)
        return {"mfd": mfd, "difficulty": HARD if mfd >= self.delta else EASY, "excluded_reason": None}

    def process(self, inputs: StepInput) -> Any:
        yield [{**row, **self.classify_row(row)} for row in inputs]


class OfflineTaskClassifier(Step):
    """Labels each row with the offline classifier (:mod:`offline_classifier`), no LLM call.

    Same columns as the LLM classifier: ``task``, ``task_error`` (always None: every row gets
    the label the model finds likeliest) and ``classifier_model``, plus ``task_confidence``.
    """

    settings: dict[str, Any] = Field(..., description="taxonomy.offline, as a dict.")
    taxonomy: list[str]
    cache_dir: str = Field(..., description="Where the fitted classifier is cached (the run's cache_dir).")
    seed: int = 0

    _fitted: Any = PrivateAttr(None)
    _featurizer: Any = PrivateAttr(None)

    @property
    def inputs(self) -> list[str]:
        return ["instruction"]

    @property
    def outputs(self) -> list[str]:
        return ["task", "task_error", "classifier_model", "task_confidence"]

    def load(self) -> None:
        super().load()
        from tapir.pipelines.offline_classifier import fit
        from tapir.recipe import OfflineClassifierSettings

        settings = OfflineClassifierSettings(**self.settings)
        self._fitted, self._featurizer = fit(settings, self.taxonomy, Path(self.cache_dir), self.seed)

    def process(self, inputs: StepInput) -> Any:
        from tapir.pipelines.offline_classifier import predict, text_of

        rows = list(inputs)
        real = [n for n, row in enumerate(rows) if not row.get(PLACEHOLDER)]
        labels = predict(
            self._fitted,
            self._featurizer,
            [text_of(rows[n]["instruction"], rows[n].get("input")) for n in real],
        )
        name = f"offline {self._fitted.features} classifier ({self._fitted.rows} labelled rows)"
        out = [
            {**row, "task": None, "task_error": None, "classifier_model": None, "task_confidence": None}
            for row in rows
        ]
        for n, (label, probability) in zip(real, labels):
            out[n].update(task=label, classifier_model=name, task_confidence=round(probability, 4))
        yield out


class PlanExpansion(GlobalStep):
    """Which seeds (or bare task labels) the teacher expands, and how often (:mod:`expansion_plan`)."""

    allocation: str = "mix"
    per_hard_seed: int = 2
    max_hard_seeds: int | None = None
    budget: int | None = None
    target_mix: dict[str, float] = Field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return ["id", "instruction", "difficulty", "mfd", "task"]

    @property
    def outputs(self) -> list[str]:
        return ["id", "instruction", "input", "task", "variant", "expansion_source"]

    def process(self, inputs: StepInput) -> Any:
        requests = plan_expansion(
            real_rows(inputs),
            self.target_mix,
            mode=self.allocation,
            per_hard_seed=self.per_hard_seed,
            max_hard_seeds=self.max_hard_seeds,
            budget=self.budget,
        )
        yield [{**r.row(), PLACEHOLDER: False} for r in requests] or [placeholder_row()]


class ExpansionsToSeeds(GlobalStep):
    """Turns parsed expansions into fresh seed rows; failed or repeated ones stay in the
    expansion audit (the summary counts them) and are not sent on."""

    @property
    def inputs(self) -> list[str]:
        return ["id", "expanded_instruction", "expansion_error", "task"]

    @property
    def outputs(self) -> list[str]:
        return ["id", "instruction", "input", "origin", "parent_id", "parent_task"]

    def process(self, inputs: StepInput) -> Any:
        seen: set[str] = set()
        rows = []
        for row in real_rows(inputs):
            text = row.get("expanded_instruction")
            if row.get("expansion_error") or not text:
                continue
            key = " ".join(text.lower().split())
            if key in seen:
                continue
            seen.add(key)
            digest = hashlib.sha1(f"{row['id']}|{key}".encode()).hexdigest()[:8]
            rows.append(
                {
                    "id": f"{row['id']}-x{digest}",
                    "instruction": text,
                    "input": "",
                    "origin": "expansion",
                    "parent_id": row["id"],
                    "parent_task": row.get("task") or "",
                    PLACEHOLDER: False,
                }
            )
        yield rows or [placeholder_row()]


def _normalise_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Expanded rows ran through steps named ``*_expanded``; align their metadata keys."""
    if not metadata:
        return {}
    return {k.replace(EXPANDED_SUFFIX, ""): v for k, v in metadata.items()}


class Decontaminate(Step):
    """Excludes rows whose text matches a benchmark prompt (see ``tapir.pipelines.decontamination``),
    before re-balancing. ``benchmarks_file`` is named by its content, so changed benchmark files
    change this step's signature."""

    benchmarks_file: str
    ngram: int = 13
    _index: Any = PrivateAttr(default=None)

    @property
    def inputs(self) -> list[str]:
        return ["instruction", "difficulty"]

    @property
    def outputs(self) -> list[str]:
        return ["difficulty", "excluded_reason"]

    def load(self) -> None:
        super().load()
        from tapir.pipelines.decontamination import BenchmarkIndex

        texts = json.loads(Path(self.benchmarks_file).read_text(encoding="utf-8"))
        self._index = BenchmarkIndex(texts, self.ngram)

    def process(self, inputs: StepInput) -> Any:
        out = []
        for row in inputs:
            row = dict(row)
            if not row.get(PLACEHOLDER) and row.get("difficulty") != EXCLUDED:
                reason = self._index.check_row(row)
                if reason is not None:
                    row.update(difficulty=EXCLUDED, excluded_reason=reason)
            out.append(row)
        yield out


class MergePool(GlobalStep):
    """Joins seed rows and expanded rows into one pool with the same columns.

    An expansion that repeats a seed instruction is excluded (a duplicate, not a new task).
    """

    @property
    def inputs(self) -> list[str]:
        return ["id", "instruction", "difficulty"]

    @property
    def outputs(self) -> list[str]:
        return ["origin", "parent_id", "parent_task"]

    def process(self, *inputs: StepInput) -> Any:
        rows = [dict(row) for batch in inputs for row in real_rows(batch)]
        seed_keys = {
            " ".join(r["instruction"].lower().split()): r["id"]
            for r in rows
            if r.get("origin", "seed") == "seed"
        }
        for row in rows:
            row.setdefault("origin", "seed")
            row.setdefault("parent_id", "")
            row["parent_task"] = row.get("parent_task") or ""
            if METADATA in row:
                row[METADATA] = _normalise_metadata(row[METADATA])
            if row["origin"] == "expansion":
                twin = seed_keys.get(" ".join(row["instruction"].lower().split()))
                if twin is not None and row["difficulty"] != EXCLUDED:
                    row.update(
                        difficulty=EXCLUDED, mfd=None, excluded_reason=f"expansion repeats seed {twin}"
                    )
        yield rows


class ApplyReview(Step):
    """Reviewers' decisions from ``tapir review pull`` (see tapir.review.corrections): a corrected task
    label replaces the classifier's (kept in ``task_classifier``), a rejected row is excluded
    with its reason, a fixed response becomes the one trained on (``review_response``).

    The decisions are step fields, so they are part of the step's signature: a new pull makes
    distilabel recompute from here on, while the LLM cache answers every unchanged prompt.
    """

    labels: dict[str, str] = Field(default_factory=dict)
    rejected: list[str] = Field(default_factory=list)
    fixes: dict[str, str] = Field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return ["id", "task", "difficulty"]

    @property
    def outputs(self) -> list[str]:
        return ["task_classifier", "review_note", "review_response"]

    def apply(self, row: dict[str, Any], rejected: set[str]) -> dict[str, Any]:
        row = {**row, "task_classifier": row.get("task"), "review_note": None, "review_response": None}
        notes = []
        example = str(row["id"])
        if example in self.labels and self.labels[example] != row.get("task"):
            notes.append(f"label {row.get('task')} -> {self.labels[example]}")
            row["task"] = self.labels[example]
        if example in self.fixes:
            notes.append("response fixed")
            row["review_response"] = self.fixes[example]
        if example in rejected:
            notes.append("rejected")
            if row["difficulty"] != EXCLUDED:
                row.update(difficulty=EXCLUDED, excluded_reason="review: rejected by a reviewer")
        row["review_note"] = "; ".join(notes) or None
        return row

    def process(self, inputs: StepInput) -> Any:
        rejected = set(self.rejected)
        yield [self.apply(row, rejected) for row in inputs]


class KeepForReport(Step):
    """A leaf that keeps an intermediate table in the run's output (audit of counts)."""

    def process(self, inputs: StepInput) -> Any:
        yield inputs


class TaskRebalancer(GlobalStep):
    """Re-balances the hard and the easy bucket separately to the target task mix, so any
    hard/easy blend the curriculum draws keeps that mix. Emits each selected row once with a
    ``copies`` count, so up-sampled rows are refined once, not once per copy."""

    target_mix: dict[str, float]
    size: int | None = None
    max_copies: int | None = None
    enabled: bool = True
    seed: int = 42

    @property
    def inputs(self) -> list[str]:
        return ["id", "task", "difficulty"]

    @property
    def outputs(self) -> list[str]:
        return ["copies"]

    def process(self, inputs: StepInput) -> Any:
        rng = random.Random(self.seed)
        out = []
        for bucket in (HARD, EASY):
            rows = sorted((r for r in real_rows(inputs) if r["difficulty"] == bucket), key=lambda r: r["id"])
            if not rows:
                continue
            if self.enabled:
                labels = [r["task"] for r in rows]
                result = rebalance(labels, self.target_mix, self.size or len(rows), rng, self.max_copies)
                copies = result.copies
            else:
                copies = [1] * len(rows)
            out.extend({**row, "copies": count} for row, count in zip(rows, copies) if count)
        yield out or [placeholder_row()]


class CurriculumPlanner(GlobalStep):
    """Assigns rows to the warm-up slice and to rounds 1..R with the recipe's hard shares, and
    writes each example in chat format (``messages``) with the response to train on."""

    hard_share: list[float]
    round_size: int | None = None
    round_sizes: list[int] | None = None
    carry_over: float = 0.0
    warmup_size: int = 0
    seed: int = 42
    user_template: str = Field(..., description="Jinja text of the user turn.")

    @property
    def inputs(self) -> list[str]:
        return ["id", "instruction", "difficulty", "copies", "teacher_response"]

    @property
    def outputs(self) -> list[str]:
        return ["split", "round", "carried", "response", "response_source", "messages"]

    def process(self, inputs: StepInput) -> Any:
        rows = sorted(real_rows(inputs), key=lambda r: r["id"])
        if not rows:
            yield [placeholder_row()]  # the run reports why nothing was selected
            return
        hard_pool = [i for i, r in enumerate(rows) if r["difficulty"] == HARD for _ in range(r["copies"])]
        easy_pool = [i for i, r in enumerate(rows) if r["difficulty"] == EASY for _ in range(r["copies"])]
        try:
            plan = plan_curriculum(
                hard_pool,
                easy_pool,
                self.hard_share,
                random.Random(self.seed),
                round_size=self.round_size,
                round_sizes=self.round_sizes,
                carry_over=self.carry_over,
                warmup_pool=list(range(len(rows))),
                warmup_size=self.warmup_size,
            )
        except DataError as error:
            yield [{**placeholder_row(), STEP_ERROR: str(error)}]
            return
        out = [self._example(rows[i], WARMUP, 0, False) for i in plan.warmup]
        for round_plan in plan.rounds:
            split = round_split(round_plan.round)
            out.extend(
                self._example(rows[i], split, round_plan.round, False)
                for i in round_plan.hard + round_plan.easy
            )
            out.extend(self._example(rows[i], split, round_plan.round, True) for i in round_plan.carried)
        yield out

    def _example(self, row: dict[str, Any], split: str, number: int, carried: bool) -> dict[str, Any]:
        refined = row.get("refined_response")
        use_refined = bool(refined) and not row.get("refine_error")
        response = refined if use_refined else row["teacher_response"]
        source = "refined" if use_refined else "teacher"
        if row.get("review_response"):  # a reviewer's fix outranks both
            response, source = row["review_response"], "review"
        user = render(self.user_template, instruction=row["instruction"], input=row.get("input") or "")
        return {
            **row,
            "split": split,
            "round": number,
            "carried": carried,
            "response": response,
            "response_source": source,
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": response}],
        }
