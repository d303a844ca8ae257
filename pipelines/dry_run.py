"""``tapir data --dry-run``: validate the recipe, build the graph, print the plan and an upper
bound on LLM calls and tokens per role, all without loading a model or touching the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapir.errors import DataError
from tapir.pipelines.graph import build_pipeline
from tapir.pipelines.prompts import render, template_text
from tapir.pipelines.seeds import count_seeds_offline, describe_source, load_seeds
from tapir.pricing import usd
from tapir.publishing.summary_text import judging_line
from tapir.recipe import Recipe
from tapir.serving.backends import backend_of
from tapir.serving.engines import engines_table
from tapir.serving.llm_factory import LLMContext, model_id

# A rough, tokenizer-free estimate; good enough to size a budget.
CHARS_PER_TOKEN = 4
TYPICAL_INSTRUCTION = "Explain, step by step, how to compute the area of a triangle from its three sides."


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


# The expected figures' assumptions (the upper bound makes none): answers use half their token
# cap, and this share of seeds turns out hard (what is expanded, graded again and refined).
EXPECTED_OUTPUT_SHARE = 0.5
EXPECTED_HARD_SHARE = 0.3
ASSUMPTIONS = (
    f"expected: answers at {EXPECTED_OUTPUT_SHARE:.0%} of their token cap, {EXPECTED_HARD_SHARE:.0%} of "
    "seeds hard; upper bound: every seed hard, every answer at its cap, every row kept"
)


@dataclass
class RoleEstimate:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    steps: list[str] = field(default_factory=list)
    expected_calls: float = 0.0
    expected_input_tokens: float = 0.0
    expected_output_tokens: float = 0.0

    def add(
        self, step: str, calls: int, prompt_tokens: int, max_new_tokens: int, expected_share: float = 1.0
    ) -> None:
        """``calls`` at most; ``expected_share`` of them expected."""
        self.calls += calls
        self.input_tokens += calls * prompt_tokens
        self.output_tokens += calls * max_new_tokens
        self.steps.append(f"{step} ({calls})")
        self.expected_calls += calls * expected_share
        self.expected_input_tokens += calls * expected_share * prompt_tokens
        self.expected_output_tokens += calls * expected_share * max_new_tokens * EXPECTED_OUTPUT_SHARE


def estimate(recipe: Recipe, n_seeds: int) -> dict[str, RoleEstimate]:
    """Upper bound: every seed turns out hard, every expansion parses, every row is selected."""
    roles = {"teacher": RoleEstimate(), "student": RoleEstimate(), "judge": RoleEstimate()}
    instruction_tokens = _tokens(TYPICAL_INSTRUCTION)
    respond = _tokens(render(template_text("respond"), instruction=TYPICAL_INSTRUCTION, input=""))
    teacher_out = recipe.teacher.generation.max_new_tokens
    student_out = recipe.student.generation.max_new_tokens
    judge_base = _tokens(
        render(template_text(recipe.judging.template), instruction=TYPICAL_INSTRUCTION, input="", response="")
    )
    classify = _tokens(
        render(
            template_text("classify_task"),
            instruction=TYPICAL_INSTRUCTION,
            input="",
            labels=recipe.taxonomy.labels,
            fallback_label=recipe.taxonomy.fallback_label,
        )
    )
    classifier = roles[recipe.taxonomy.classifier_role]

    def grade_and_classify(prefix: str, n: int, share: float) -> None:
        roles["teacher"].add(f"respond_teacher{prefix}", n, respond, teacher_out, share)
        roles["student"].add(f"respond_student{prefix}", n, respond, student_out, share)
        roles["judge"].add(
            f"judge_teacher{prefix}", n, judge_base + teacher_out, recipe.judging.max_new_tokens, share
        )
        roles["judge"].add(
            f"judge_student{prefix}", n, judge_base + student_out, recipe.judging.max_new_tokens, share
        )
        if recipe.taxonomy.classifier == "llm":
            classifier.add(f"classify_task{prefix}", n, classify, recipe.taxonomy.max_new_tokens, share)

    grade_and_classify("", n_seeds, 1.0)
    expanded = 0
    if recipe.expansion.enabled:
        expanded = new_instructions(recipe, n_seeds)
        expand_prompt = _tokens(
            render(
                template_text(recipe.expansion.template),
                instruction=TYPICAL_INSTRUCTION,
                input="",
                task="Math",
                variant=0,
            )
        )
        roles["teacher"].add(
            "expand_instructions",
            expanded,
            expand_prompt,
            recipe.expansion.max_new_tokens,
            EXPECTED_HARD_SHARE,
        )
        grade_and_classify("_expanded", expanded, EXPECTED_HARD_SHARE)
    if recipe.refinement.enabled:
        refine_prompt = _tokens(
            render(
                template_text(recipe.refinement.default_prompt),
                instruction=TYPICAL_INSTRUCTION,
                input="",
                response="",
                task="Math",
            )
        )
        rows = n_seeds + expanded
        expected_rows = n_seeds + expanded * EXPECTED_HARD_SHARE
        roles["teacher"].add(
            "refine_responses",
            rows,
            refine_prompt + teacher_out,
            recipe.refinement.max_new_tokens,
            expected_rows / rows if rows else 1.0,
        )
    del instruction_tokens
    return roles


def costs(recipe: Recipe, roles: dict[str, RoleEstimate]) -> dict[str, Any]:
    """Each priced role's expected and upper-bound cost of ``roles``' tokens, in $ (batch
    discount applied), and the totals. Unpriced roles are listed as such, not counted as free."""
    priced: dict[str, Any] = {}
    unpriced = []
    for role, numbers in roles.items():
        spec = recipe.role(role)  # type: ignore[arg-type]
        price = spec.unit_price()
        if not numbers.calls:
            continue
        if price is None:
            unpriced.append(role)
            continue
        priced[role] = {
            "price_per_million_tokens": spec.price_per_million_tokens,
            "batch": spec.batch,
            "expected_usd": round(
                usd(price, numbers.expected_input_tokens, numbers.expected_output_tokens), 2
            ),
            "upper_usd": round(usd(price, numbers.input_tokens, numbers.output_tokens), 2),
        }
    return {
        "roles": priced,
        "unpriced": unpriced,
        "expected_usd": round(sum(r["expected_usd"] for r in priced.values()), 2),
        "upper_usd": round(sum(r["upper_usd"] for r in priced.values()), 2),
        "assumptions": ASSUMPTIONS,
    }


def check_spend_cap(recipe: Recipe, n_seeds: int) -> dict[str, Any]:
    """The plan's cost; refuses (one line) a plan whose upper bound exceeds pipeline.max_spend_usd."""
    return refuse_over_cap(recipe, costs(recipe, estimate(recipe, n_seeds)))


def refuse_over_cap(recipe: Recipe, cost: dict[str, Any]) -> dict[str, Any]:
    """``cost`` (of ``costs``), or one error line when its upper bound exceeds the cap."""
    cap = recipe.pipeline.max_spend_usd
    refuse_unpriced_under_cap(recipe, cost)
    if cap is not None and cost["upper_usd"] > cap:
        parts = ", ".join(f"{role} ${c['upper_usd']:,.2f}" for role, c in cost["roles"].items())
        raise DataError(
            f"pipeline.max_spend_usd: the plan may cost up to ${cost['upper_usd']:,.2f} ({parts}; "
            f"expected ${cost['expected_usd']:,.2f}), over the ${cap:g} cap; raise the cap or plan "
            "less (seeds.limit, expansion, refinement)"
        )
    return cost


def unpriced_paid(recipe: Recipe, cost: dict[str, Any] | None = None) -> list[str]:
    """Roles (the plan calls; without ``cost``, every role) that may cost money but set no
    price: their spend is unknown."""
    roles = cost["unpriced"] if cost is not None else ["teacher", "student", "judge"]
    return [r for r in roles if recipe.role(r).paid and not recipe.role(r).price_per_million_tokens]  # type: ignore[arg-type]


def refuse_unpriced_under_cap(recipe: Recipe, cost: dict[str, Any] | None = None) -> None:
    """One line when a spend cap is set and a paid role has no price: the cap could not see it."""
    cap = recipe.pipeline.max_spend_usd
    unpriced = unpriced_paid(recipe, cost)
    if cap is None or not unpriced:
        return
    role = unpriced[0]
    raise DataError(
        f"{role}.price_per_million_tokens: {role} is a paid endpoint "
        f"({_where(recipe.role(role))}) with no price, so the ${cap:g} spend cap cannot count "  # type: ignore[arg-type]
        "what it costs; set {input: $, output: $} per million tokens, or drop --max-spend"
    )


def _where(spec: Any) -> str:
    return "Batch API" if spec.batch else (spec.base_url or "https://api.openai.com/v1")


def new_instructions(recipe: Recipe, n_seeds: int) -> int:
    """At most this many expansion requests (one new instruction each)."""
    settings = recipe.expansion
    if settings.allocation == "mix" and settings.budget is not None:
        return settings.budget
    return min(n_seeds, settings.max_hard_seeds or n_seeds) * settings.per_hard_seed


def planned_rows(recipe: Recipe, n_seeds: int) -> dict[str, int]:
    """Rows each LLM step will see at most (the live progress's totals; refinement depends on
    the selection, so it has none)."""
    chain = [s for s in CHAIN_STEPS if s != "classify_task" or recipe.taxonomy.classifier == "llm"]
    rows = {f"{step}": n_seeds for step in chain}
    if recipe.expansion.enabled:
        expanded = new_instructions(recipe, n_seeds)
        rows["expand_instructions"] = expanded
        rows.update({f"{step}_expanded": expanded for step in chain})
    return rows


CHAIN_STEPS = ("respond_teacher", "respond_student", "judge_teacher", "judge_student", "classify_task")


def dry_run(recipe: Recipe, console: Console) -> dict[str, Any]:
    """Print the plan; returns the estimate (for tests). Raises TapirError on bad input."""
    n_seeds, note = count_seeds_offline(recipe.seeds)
    kind, location = describe_source(recipe.seeds)
    # Build the real graph (no model is loaded, nothing is called) so its wiring is validated.
    sample = (
        load_seeds(recipe.seeds, recipe.seed)[:2]
        if kind != "hub"
        else [
            {
                "id": "dry-run",
                "instruction": TYPICAL_INSTRUCTION,
                "input": "",
                "origin": "seed",
                "parent_id": "",
                "placeholder": False,
            }
        ]
    )
    context = LLMContext(cache_dir=Path(recipe.cache_dir), seed=recipe.seed, dry_run=True)
    pipeline = build_pipeline(recipe, sample, context)
    pipeline.dag.validate()

    console.print(f"[bold]Dry run[/] of recipe [cyan]{recipe.name}[/] (hash {recipe.fingerprint()})")
    console.print(f"  seeds: {kind} {location}: {n_seeds if n_seeds is not None else '?'} rows ({note})")
    console.print(
        f"  runner: distilabel {recipe.pipeline.runner}"
        + (
            f" at {recipe.pipeline.ray_address or 'a single-node Ray instance on loopback'}"
            if recipe.pipeline.runner == "ray"
            else ""
        )
        + f"; engines at {recipe.pipeline.engine_host}"
    )
    console.print(f"  graph: {len(pipeline.dag.G.nodes)} steps: " + ", ".join(pipeline.dag.G.nodes))
    console.print(
        f"  MFD delta {recipe.difficulty.delta:g}; {recipe.curriculum.rounds} rounds, hard share "
        f"{recipe.curriculum.hard_share}; {len(recipe.taxonomy.labels)} task labels"
    )
    console.print(
        f"  {judging_line({'scoring': recipe.judge_scoring, 'top_logprobs': recipe.judging.top_logprobs})}"
    )
    console.print(f"  output: {recipe.resolved_output_dir}")
    roles = estimate(recipe, n_seeds or 0)
    cost = costs(recipe, roles)
    table = Table(
        title="LLM calls and tokens per role (upper bound: every seed hard, every row kept)",
        title_justify="left",
    )
    columns = ["role", "backend", "model", "calls", "input tokens (≈)", "output tokens (max)"]
    if cost["roles"]:
        columns += ["$ expected", "$ upper bound"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("role", "backend", "model") else "right")
    for role, numbers in roles.items():
        spec = recipe.role(role)  # type: ignore[arg-type]
        where = (
            spec.backend + (" batch" if spec.batch else "") + (f" @ {spec.base_url}" if spec.base_url else "")
        )
        row = [role, where, model_id(spec), f"{numbers.calls:,}", f"{numbers.input_tokens:,}"]
        row.append(f"{numbers.output_tokens:,}")
        if cost["roles"]:
            priced = cost["roles"].get(role)
            row += [f"{priced['expected_usd']:,.2f}", f"{priced['upper_usd']:,.2f}"] if priced else ["", ""]
        table.add_row(*row)
    if cost["roles"]:
        table.add_row(
            "total",
            "",
            "",
            "",
            "",
            "",
            f"{cost['expected_usd']:,.2f}",
            f"{cost['upper_usd']:,.2f}",
            style="bold",
        )
    console.print(table)
    if cost["roles"]:
        console.print(f"  cost: list prices per million tokens, batch discount applied; {ASSUMPTIONS}")
    for role in unpriced_paid(recipe, cost):
        console.print(
            f"[yellow]warning: {role} is a paid endpoint ({_where(recipe.role(role))}) with no "  # type: ignore[arg-type]
            "price_per_million_tokens: its cost is unknown, not in the totals, and --max-spend refuses it[/]"
        )
    batched = [r for r in ("teacher", "student", "judge") if recipe.role(r).batch]  # type: ignore[arg-type]
    if batched:
        console.print(
            f"  batch API: {', '.join(batched)} (tapir's batch client, ledger in "
            f"{Path(recipe.cache_dir) / 'batches'}"
            + (
                "; distilabel's own offline batch generation, which its Ray runner refuses, is not used)"
                if recipe.pipeline.runner == "ray"
                else ")"
            )
        )
    if recipe.pipeline.max_spend_usd is not None:
        refuse_over_cap(recipe, cost)
        console.print(
            f"  spend cap: ${recipe.pipeline.max_spend_usd:g} (upper bound ${cost['upper_usd']:,.2f})"
        )
    if n_seeds is None:
        console.print("[yellow]seed count unknown: set seeds.expected_rows to estimate calls[/]")
    for role in ("teacher", "student", "judge"):
        spec = recipe.role(role)  # type: ignore[arg-type]
        if backend_of(spec.backend).remote and not os.environ.get(spec.api_key_env):
            console.print(
                f"[yellow]note: {role}.api_key_env {spec.api_key_env} is not set here; a real run needs it[/]"
            )
    for missing in _missing_engines(recipe):  # the plan is valid anywhere; the run needs them here
        console.print(f"[yellow]note: {missing}; a real run here refuses to start[/]")
    context.engine_set().check_placement()
    engines = context.engine_set().plan()
    console.print(engines_table(engines))
    steps = {name: pipeline.dag.get_step(name)["step"] for name in pipeline.dag}
    replicated = sorted(name for name, step in steps.items() if step.resources.replicas > 1)
    if replicated:
        console.print(f"{recipe.pipeline.replicas} worker processes each: {', '.join(replicated)}")
    console.print("[green]recipe valid; nothing was loaded or called[/]")
    return {
        "stage": "data",
        "recipe": recipe.name,
        "recipe_hash": recipe.fingerprint(),
        "seeds": n_seeds,
        "steps": list(pipeline.dag.G.nodes),
        "replicas": {name: steps[name].resources.replicas for name in replicated},
        "engines": engines,
        "roles": {r: vars(e) for r, e in roles.items()},
        "estimate": {
            "calls": sum(e.calls for e in roles.values()),
            "input_tokens": sum(e.input_tokens for e in roles.values()),
            "output_tokens": sum(e.output_tokens for e in roles.values()),
            "note": "upper bound: every seed hard, every row kept",
        },
        "cost": cost,
    }


def _missing_engines(recipe: Recipe) -> list[str]:
    """What this machine lacks for the run: Ray for runner: ray, an engine a role's backend needs
    (vLLM for a vllm role)."""
    from tapir.pipelines.ray_runner import ray_missing

    missing = [ray_missing()] if recipe.pipeline.runner == "ray" else []
    backends = {recipe.role(role).backend for role in ("teacher", "student", "judge")}  # type: ignore[arg-type]
    missing += [backend_of(name).missing() for name in sorted(backends)]
    return [m for m in missing if m]
