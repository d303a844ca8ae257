"""The TAPIR data pipeline as one distilabel step graph.

    load_seeds >> respond_teacher >> respond_student >> judge_teacher >> judge_student
               >> classify_task >> fitting_difficulty ──────────────────────┐
    fitting_difficulty >> plan_expansion >> expand_instructions               │
        expand_instructions >> audit_expansion (leaf)                        │
        expand_instructions >> expansions_to_seeds >> (the same six steps,   │
                                                      suffixed _expanded) ───┤
    [fitting_difficulty, fitting_difficulty_expanded] >> merge_pool <────────┘
    merge_pool >> decontaminate >> apply_review >> audit_pool (leaf)
    apply_review >> rebalance_tasks >> refine_responses >> plan_curriculum (leaf)
                                                      >> audit_selected (leaf)

distilabel validates the graph before it runs and caches every step by its signature, so an
unchanged recipe re-runs from cache with zero LLM calls, and changing one knob recomputes
only the steps it affects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilabel.pipeline import Pipeline
from distilabel.steps import StepResources
from distilabel.steps.base import _Step

from tapir.pipelines.local_pipeline import TapirPipeline
from tapir.pipelines.prompts import template_text
from tapir.pipelines.steps import (
    EXPANDED_SUFFIX,
    ApplyReview,
    CurriculumPlanner,
    Decontaminate,
    ExpansionsToSeeds,
    KeepForReport,
    LoadSeedRows,
    MergePool,
    ModelFittingDifficulty,
    OfflineTaskClassifier,
    PlanExpansion,
    TaskRebalancer,
)
from tapir.pipelines.tasks import (
    InstructionExpander,
    ResponseGenerator,
    ResponseJudge,
    TaskAwareRefiner,
    TaskClassifier,
)
from tapir.recipe import Recipe
from tapir.review.corrections import Corrections
from tapir.serving.engine_client import TapirEngineClient
from tapir.serving.llm_factory import LLMContext, build_llm, choice_constraint, score_constraint
from tapir.serving.llms import TRANSPORT_SETTINGS

# Leaf steps whose outputs the run reads back.
POOL, EXPANSION_AUDIT, SELECTED, CURRICULUM = (
    "audit_pool",
    "audit_expansion",
    "audit_selected",
    "plan_curriculum",
)

# step name (without suffix) -> role whose model it calls; used by the dry run and summary.
STEP_ROLES = {
    "respond_teacher": "teacher",
    "respond_student": "student",
    "judge_teacher": "judge",
    "judge_student": "judge",
    "classify_task": "classifier",
    "expand_instructions": "teacher",
    "refine_responses": "teacher",
}


@dataclass
class Chain:
    first: _Step
    last: _Step


def _task_kwargs(recipe: Recipe) -> dict[str, Any]:
    return {"input_batch_size": recipe.pipeline.batch_size, "add_raw_input": False}


def _respond_grade_classify(recipe: Recipe, context: LLMContext, suffix: str) -> Chain:
    """Teacher and student answer, the judge grades both, the task is labelled, MFD computed."""
    kwargs = _task_kwargs(recipe)
    respond = template_text("respond")
    judge_template = template_text(recipe.judging.template, "judging.template")
    judge_constraint = score_constraint(1, 10)
    scoring = recipe.judge_scoring

    def judge_llm(step: str):
        return build_llm(
            recipe.judge,
            "judge",
            context,
            max_new_tokens=recipe.judging.max_new_tokens,
            temperature=recipe.judging.temperature,
            constraint=judge_constraint,
            step=step,
            top_logprobs=recipe.judging.top_logprobs if scoring == "expected" else None,
        )

    def respond_as(role: str) -> ResponseGenerator:
        return ResponseGenerator(
            name=f"respond_{role}{suffix}",
            llm=build_llm(recipe.role(role), role, context, step=f"respond_{role}{suffix}"),
            template=respond,
            output_mappings={
                "response": f"{role}_response",
                "response_error": f"{role}_response_error",
                "model_name": f"{role}_model",
            },
            **kwargs,
        )

    def judge_answer_of(role: str) -> ResponseJudge:
        return ResponseJudge(
            name=f"judge_{role}{suffix}",
            llm=judge_llm(f"judge_{role}{suffix}"),
            template=judge_template,
            scoring=scoring,
            answer_error_column=f"{role}_response_error",
            input_mappings={"response": f"{role}_response"},
            output_mappings={
                "score": f"{role}_score",
                "score_error": f"{role}_score_error",
                "model_name": "judge_model",
                "written_score": f"{role}_written_score",
            },
            **kwargs,
        )

    steps: list[_Step] = [
        respond_as("teacher"),
        respond_as("student"),
        judge_answer_of("teacher"),
        judge_answer_of("student"),
        task_classifier(recipe, context, suffix),
        ModelFittingDifficulty(
            name=f"fitting_difficulty{suffix}",
            delta=recipe.difficulty.delta,
            min_teacher_score=recipe.difficulty.min_teacher_score,
            input_batch_size=recipe.pipeline.batch_size,
        ),
    ]
    for upstream, downstream in zip(steps, steps[1:]):
        upstream >> downstream
    return Chain(steps[0], steps[-1])


def task_classifier(recipe: Recipe, context: LLMContext, suffix: str = "") -> _Step:
    """The task labeller: the recipe's LLM prompted with the taxonomy, or the offline classifier."""
    name = f"classify_task{suffix}"
    if recipe.taxonomy.classifier == "offline":
        return OfflineTaskClassifier(
            name=name,
            settings=recipe.taxonomy.offline.model_dump(),
            taxonomy=recipe.taxonomy.labels,
            cache_dir=str(context.cache_dir),
            seed=recipe.seed,
            input_batch_size=recipe.pipeline.batch_size,
        )
    role = recipe.taxonomy.classifier_role
    return TaskClassifier(
        name=name,
        llm=build_llm(
            recipe.role(role),
            role,
            context,
            max_new_tokens=recipe.taxonomy.max_new_tokens,
            temperature=0.0,
            constraint=choice_constraint(recipe.taxonomy.labels, "one taxonomy label"),
            step=name,
        ),
        template=template_text("classify_task"),
        labels=recipe.taxonomy.labels,
        fallback_label=recipe.taxonomy.fallback_label,
        output_mappings={"model_name": "classifier_model"},
        **_task_kwargs(recipe),
    )


def pipeline_name(recipe: Recipe) -> str:
    """distilabel's name for the recipe's pipeline: its cache folder is named after it."""
    return f"tapir-{recipe.name}"


def build_pipeline(
    recipe: Recipe,
    seeds: list[dict[str, Any]],
    context: LLMContext,
    corrections: Corrections | None = None,
    benchmarks_file: str | None = None,
) -> Pipeline:
    """The whole graph for one recipe. Building loads no model and makes no call.

    ``corrections`` are reviewers' decisions pulled from Argilla (none: the models decide);
    ``benchmarks_file`` holds the benchmark prompts to keep out (``decontamination``; a dry
    run, which loads no step, leaves it unresolved).
    """
    corrections = corrections or Corrections()
    decontamination_file = (
        (benchmarks_file or "(resolved at run time)") if recipe.decontamination.enabled else None
    )
    kwargs = _task_kwargs(recipe)
    with TapirPipeline(
        name=pipeline_name(recipe),
        description=recipe.description or "TAPIR curriculum data",
        cache_dir=str(context.cache_dir / "distilabel"),
    ) as pipeline:
        load = LoadSeedRows(name="load_seeds", data=seeds, batch_size=recipe.pipeline.batch_size)
        seeds_chain = _respond_grade_classify(recipe, context, suffix="")
        load >> seeds_chain.first
        pool_inputs = [seeds_chain.last]

        if recipe.expansion.enabled:
            pick = PlanExpansion(
                name="plan_expansion",
                allocation=recipe.expansion.allocation,
                per_hard_seed=recipe.expansion.per_hard_seed,
                max_hard_seeds=recipe.expansion.max_hard_seeds,
                budget=recipe.expansion.budget,
                target_mix=recipe.taxonomy.normalised_mix(),
            )
            expand = InstructionExpander(
                name="expand_instructions",
                llm=build_llm(
                    recipe.teacher,
                    "teacher",
                    context,
                    max_new_tokens=recipe.expansion.max_new_tokens,
                    temperature=recipe.expansion.temperature,
                    step="expand_instructions",
                ),
                template=template_text(recipe.expansion.template, "expansion.template"),
                output_mappings={"model_name": "expander_model"},
                **kwargs,
            )
            audit = KeepForReport(name=EXPANSION_AUDIT)
            to_seeds = ExpansionsToSeeds(name="expansions_to_seeds")
            expanded_chain = _respond_grade_classify(recipe, context, suffix=EXPANDED_SUFFIX)
            seeds_chain.last >> pick >> expand >> [audit, to_seeds]
            to_seeds >> expanded_chain.first
            pool_inputs.append(expanded_chain.last)

        merge = MergePool(name="merge_pool")
        if decontamination_file is not None:
            decontaminate = Decontaminate(
                name="decontaminate",
                benchmarks_file=str(decontamination_file),
                ngram=recipe.decontamination.ngram,
                input_batch_size=recipe.pipeline.batch_size,
            )
            merge >> decontaminate
            merged = decontaminate
        else:
            merged = merge
        review = ApplyReview(
            name="apply_review",
            labels=corrections.labels,
            rejected=corrections.rejected,
            fixes=corrections.fixes,
            input_batch_size=recipe.pipeline.batch_size,
        )
        pool_inputs >> merge
        merged >> review
        review >> KeepForReport(name=POOL)
        rebalancer = TaskRebalancer(
            name="rebalance_tasks",
            target_mix=recipe.taxonomy.normalised_mix(),
            size=recipe.rebalance.size,
            max_copies=recipe.rebalance.max_copies,
            enabled=recipe.rebalance.enabled,
            seed=recipe.seed,
        )
        planner = CurriculumPlanner(
            name=CURRICULUM,
            hard_share=recipe.curriculum.hard_share,
            round_size=recipe.curriculum.round_size,
            round_sizes=recipe.curriculum.round_sizes,
            carry_over=recipe.curriculum.carry_over,
            warmup_size=recipe.curriculum.warmup_size,
            seed=recipe.seed,
            user_template=template_text("respond"),
        )
        review >> rebalancer
        if recipe.refinement.enabled:
            names = {recipe.refinement.default_prompt, *recipe.refinement.prompts.values()}
            refiner = TaskAwareRefiner(
                name="refine_responses",
                llm=build_llm(
                    recipe.teacher,
                    "teacher",
                    context,
                    max_new_tokens=recipe.refinement.max_new_tokens,
                    step="refine_responses",
                ),
                templates={n: template_text(n, "refinement.prompts") for n in sorted(names)},
                prompt_for_task=recipe.refinement.prompts,
                default_prompt=recipe.refinement.default_prompt,
                input_mappings={"response": "teacher_response"},
                output_mappings={"model_name": "refiner_model"},
                **kwargs,
            )
            rebalancer >> refiner >> [planner, KeepForReport(name=SELECTED)]
        else:
            rebalancer >> [planner, KeepForReport(name=SELECTED)]
    _configure_steps(pipeline, recipe.pipeline.replicas)
    return pipeline


# distilabel flattens ``resources`` into these keys before it applies its own exclusion of
# "resources", so without them a change of replicas would look like a new step to the cache;
# likewise an LLM's retry policy and time-out, which do not change its answers.
_NOT_WHAT_A_STEP_COMPUTES = {f"resources_{key}" for key in StepResources().model_dump()} | {
    f"llm_{key}" for key in TRANSPORT_SETTINGS
}


def _configure_steps(pipeline: Pipeline, replicas: int) -> None:
    """``replicas`` worker processes for every client of a served model that feeds only
    ordinary steps (the respond / judge / classify chains).

    A step that feeds a global step keeps one process: distilabel hands a global step its
    input once the predecessor's *last* batch arrives, and with replicas that batch can
    overtake a straggler still being answered (rows lost), while the spare replicas wait for a
    stop flag that only a successor in the same stage sends (a hang at the end of the stage).
    How many processes run a step, and how its requests are retried and timed out, do not
    change what it computes, so they stay out of the step's signature: changing them keeps
    the cache.
    """
    for name in pipeline.dag:
        step = pipeline.dag.get_step(name)["step"]
        step.exclude_from_signature = set(step.exclude_from_signature) | _NOT_WHAT_A_STEP_COMPUTES
        successors = [pipeline.dag.get_step(s)["step"] for s in pipeline.dag.get_step_successors(name)]
        if (
            replicas > 1
            and isinstance(getattr(step, "llm", None), TapirEngineClient)
            and successors
            and not any(s.is_global for s in successors)
        ):
            step.resources = StepResources(replicas=replicas)
