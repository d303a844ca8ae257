"""The recipe: one YAML file describes a whole TAPIR run.

Every open choice of the method (delta, rounds, hard-share schedule, taxonomy and target mix,
refinement prompts, ...) is a typed field here with a documented default, never a constant in
code. ``--set a.b=value`` overrides go through the same schema, so a typo in an override fails
exactly like a typo in the file. Field descriptions double as the reference documentation
(``tapir recipe fields`` prints them).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tapir.errors import RecipeError
from tapir.manifest import treat_as_secret
from tapir.serving.backends import (
    BACKEND_NAMES,
    BATCH_BACKENDS,
    CHECKPOINT_BACKENDS,
    LOGPROB_BACKENDS,
    backend_of,
)

Backend = Literal[BACKEND_NAMES]  # type: ignore[valid-type]  # the adapters in tapir.serving.backends
Role = Literal["teacher", "student", "judge"]
#: numpy's seeds (and so the Trainer's and datasets' shuffles) are 32-bit.
MAX_SEED = 2**32 - 1
#: Recipe keys (and header names, at any depth of ``options``) whose value would be a credential
#: itself, matched after lower-casing and turning every run of other characters into ``_``
#: (``X-API-Key``, ``api-key`` and ``Ocp-Apim-Subscription-Key`` alike). The recipe names
#: variables instead: ``*_env``.
CREDENTIAL_KEY = re.compile(
    r"(?:^|_)(?:api_?key|apikey|subscription_key|access_key|secret_key|private_key|password|passwd"
    r"|passphrase|secret|credentials?|authorization|auth|cookie|session_token|security_token|signature)$"
    r"|^(?:token|hub_token|hf_token|access_token|auth_token|bearer_token|api_token|refresh_token"
    r"|id_token|auth|x_auth_token)$",
    re.IGNORECASE,
)
#: URL query parameters that carry a credential, besides the key names above (Google's ``key``,
#: OAuth's ``code``, signed URLs' ``sig`` and ``X-Amz-*``).
CREDENTIAL_QUERY = re.compile(r"^(?:key|code|sig|x_amz_\w+|x_goog_\w+)$")
#: Nesting a recipe may have (its schema needs five levels; engine options a few more).
MAX_YAML_DEPTH = 32
#: Values a YAML recipe may expand to through anchors and aliases (a "billion laughs" stops here).
MAX_YAML_VALUES = 100_000
# What serves a trained checkpoint (closed-loop re-score, evaluation answers); auto: llamacpp for
# a student that came from a GGUF, else transformers.
CheckpointServing = Literal[("auto", *CHECKPOINT_BACKENDS)]  # type: ignore[valid-type]

#: EasyDistill's 32 task categories (METHOD.md, step 5).
EASYDISTILL_TAXONOMY: list[str] = [
    "Math",
    "Code Generation",
    "Code Debug",
    "Reasoning",
    "Writing",
    "Complex Format",
    "Computer Science",
    "Common-Sense",
    "Counterfactual",
    "Multilingual",
    "Roleplay",
    "Biology",
    "Technology",
    "Ethics",
    "Sport",
    "Law",
    "Medicine",
    "Literature",
    "Entertainment",
    "Art",
    "Music",
    "Toxicity",
    "Economy",
    "Physics",
    "History",
    "Chemistry",
    "Philosophy",
    "Health",
    "Ecology",
    "Grammar",
    "Paraphrase",
    "Others",
]


def easydistill_target_mix() -> dict[str, float]:
    """EasyDistill's default mix: abilities students lag on (math, reasoning, code) up-weighted."""
    heavy = {"Math": 0.167, "Reasoning": 0.167, "Code Generation": 0.083, "Code Debug": 0.083}
    mix = {label: 0.017 for label in EASYDISTILL_TAXONOMY}
    mix.update(heavy)
    mix["Others"] = 0.041
    return mix


def check_http_url(value: str | None) -> str | None:
    """An http(s) URL with a host and a valid port, or a ValueError saying what is wrong."""
    if value is None:
        return value
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class StrictModel(BaseModel):
    """Unknown fields are errors: a misspelt knob must never be silently ignored; no number is
    NaN or infinite (a threshold of NaN compares false with everything and excludes every row)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class GenerationSettings(StrictModel):
    """How the role samples its free-text answers (the judge's grading and the classifier's label
    take their budget and temperature from judging and taxonomy)."""

    max_new_tokens: int = Field(256, gt=0, description="Upper bound on generated tokens per call.")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")


class ModelSpec(StrictModel):
    """One role's model, on one of the backends ``tapir.serving.backends`` describes (the only
    place that compares backend names)."""

    backend: Backend = Field(
        "llamacpp",
        description="How the model is served; tapir runs one engine per distinct model, shared by "
        "every step that uses it. llamacpp (a GGUF in llama-cpp-python's OpenAI-compatible server, "
        "started by tapir), vllm (vLLM's OpenAI server from `make vllm-env`, or `vllm serve` on PATH, "
        "started by tapir; 'embedded' is converted to a transformers folder once), openai (an "
        "OpenAI-compatible endpoint you run or buy: OpenAI, vLLM, llama.cpp, TGI; nothing is "
        "started), transformers (loaded inside the step), scripted (tapir's loopback simulator "
        "with canned answers: for tests and checking a recipe's plumbing).",
    )
    model: str = Field(
        "embedded",
        description="'embedded' (Gemma 3 270M GGUF shipped on PyPI), a local path, a Hub id, "
        "or the served model name of an OpenAI-compatible endpoint.",
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key. The key itself never "
        "goes in a recipe, a log or an artifact.",
    )
    chat_template: str | None = Field(
        None,
        description="Chat template for models without one: a template tapir ships, by name "
        "(tapir_chat), or your own Jinja file (the embedded model uses tapir_chat; training uses "
        "the same template).",
    )
    context_length: int = Field(2048, gt=0, description="Context window to allocate (n_ctx / max_model_len).")
    threads: int | None = Field(
        None, gt=0, le=1024, description="CPU threads for llamacpp (default: all cores)."
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Sampling seed (default: the recipe seed).")
    timeout_s: float = Field(
        120.0,
        ge=1,
        le=86_400,
        description="Per-request timeout in seconds (at least 1: clients take whole seconds; at most a day).",
    )
    max_retries: int = Field(
        4,
        ge=0,
        le=100,
        description="Retries per request on connection errors, time-outs, 429 and 5xx (exponential "
        "back-off with jitter, Retry-After honoured); every retry and failure is counted per role.",
    )
    max_concurrency: int | None = Field(
        None,
        gt=0,
        description="Requests in flight to this model's engine across all steps (default: llamacpp "
        "4, openai 16, vllm and scripted 64).",
    )
    price_per_million_tokens: dict[str, float] | None = Field(
        None,
        description="{input: $, output: $} per million tokens (list price; batch_discount is applied "
        "to batch requests): the dry-run prices its token estimate, the live progress, the summary "
        "and the dataset card show what the run spent, and pipeline.max_spend_usd caps it.",
    )
    batch: bool = Field(
        False,
        description="Send this role's requests through the OpenAI Batch API (/v1/files + /v1/batches: "
        "half the price, its own rate limits, answers within 24 h) instead of one chat completion "
        "each; openai and scripted backends. Each step batch of rows becomes one API batch, polled "
        "until done; its id is kept in cache_dir/batches the moment it exists, so a killed run "
        "resumes polling and never submits the same requests twice.",
    )
    batch_poll_s: float = Field(
        30.0, gt=0, le=3600, description="batch: seconds between two polls of a batch."
    )
    batch_discount: float = Field(
        0.5, ge=0, le=1, description="batch: the share of the list price a batch request costs (OpenAI: 0.5)."
    )
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Engine options: for vllm the flags of `vllm serve` (tensor_parallel_size, "
        "data_parallel_size, pipeline_parallel_size, gpu_memory_utilization, dtype, ...); for "
        "llamacpp n_gpu_layers, n_batch; for scripted the simulator's latency and fault rates; "
        "for transformers the distilabel TransformersLLM's arguments.",
    )
    devices: list[int] | None = Field(
        None,
        description="The GPUs this model's engine may use (its CUDA_VISIBLE_DEVICES), e.g. [0, 1]. "
        "Unset: a GPU engine (vLLM, llama.cpp with n_gpu_layers) sees every GPU, so two of them "
        "in one run are refused unless each has its own devices. For vllm, as many as "
        "tensor x pipeline x data parallel size.",
    )
    share_devices: bool = Field(
        False,
        description="Let this engine share GPUs with another engine that also sets it (each then "
        "needs a gpu_memory_utilization that leaves room for the other).",
    )

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        return check_http_url(value)

    @field_validator("devices")
    @classmethod
    def _devices_distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 0 or len(set(value)) != len(value)):
            raise ValueError(f"must list distinct GPU indices (0, 1, ...), got {value}")
        return value

    @model_validator(mode="after")
    def _devices_fit_parallelism(self) -> ModelSpec:
        check_devices_fit(self.devices, self.backend, self.options, "options")
        return self

    @model_validator(mode="after")
    def _batch_needs_an_api(self) -> ModelSpec:
        if self.batch and self.backend not in BATCH_BACKENDS:
            raise ValueError(
                f"batch: the Batch API is an endpoint's (backend {' or '.join(BATCH_BACKENDS)}), "
                f"not {self.backend}'s"
            )
        return self

    @field_validator("price_per_million_tokens")
    @classmethod
    def _price_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return check_price(value)

    @property
    def paid(self) -> bool:
        """Whether its calls may cost money: the Batch API, or an endpoint somebody else runs at
        an address off this machine (a server on loopback is the user's own)."""
        if self.batch:
            return True
        if not backend_of(self.backend).remote:
            return False
        return not is_loopback_url(self.base_url or "https://api.openai.com/v1")

    def unit_price(self) -> dict[str, float] | None:
        """$ per million tokens as this role's requests are billed (the batch discount applied)."""
        if not self.price_per_million_tokens:
            return None
        factor = self.batch_discount if self.batch else 1.0
        return {k: v * factor for k, v in self.price_per_million_tokens.items()}


def check_price(value: dict[str, float] | None) -> dict[str, float] | None:
    """A price names both input and output (a missing one would make those tokens free)."""
    if value is None:
        return value
    if set(value) != {"input", "output"} or min(value.values()) < 0:
        raise ValueError(
            "give both input and output, each a price >= 0 in $ per million tokens "
            f"(got {', '.join(sorted(map(str, value))) or 'no keys'})"
        )
    return value


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_devices_fit(devices: list[int] | None, backend: str, options: dict[str, Any], field: str) -> None:
    wanted = backend_of(backend).gpus_in_options(options) if backend in BACKEND_NAMES else None
    if devices is not None and wanted is not None and wanted != len(devices):
        raise ValueError(
            f"devices: {len(devices)} GPU(s) {devices} for vLLM's tensor x pipeline x data parallel "
            f"size = {wanted} ({field})"
        )


class SeedSource(StrictModel):
    """Where the seed instructions come from (METHOD step 1)."""

    source: str = Field(
        "embedded",
        description="'embedded' (tapir's own few-hundred-instruction pool), a local "
        ".json/.jsonl/.parquet file, or a Hugging Face Hub dataset id.",
    )
    split: str = Field("train", description="Split to read for Hub datasets.")
    instruction_column: str = Field("instruction", description="Column holding the instruction.")
    input_column: str | None = Field(
        "input",
        description="Optional column with extra input for the instruction (self-instruct "
        "`instances[0].input` is used when the file has `instances` instead).",
    )
    id_column: str | None = Field(None, description="Stable id column (default: row number).")
    limit: int | None = Field(None, gt=0, description="Use at most this many seeds (after shuffling).")
    max_chars: int = Field(
        16_000,
        gt=0,
        description="Longest instruction + input accepted, in characters; a longer seed is refused "
        "up front (no model context takes it, and it would only come back as 'prompt too long').",
    )
    shuffle: bool = Field(True, description="Shuffle (with the recipe seed) before applying the limit.")
    license: str | None = Field(
        None,
        description="Licence of the seed data, shown on the dataset card (e.g. cc-by-nc-4.0 for Alpaca).",
    )
    expected_rows: int | None = Field(
        None,
        gt=0,
        description="Row count of a Hub dataset, used by --dry-run to estimate LLM calls offline.",
    )


class JudgingSettings(StrictModel):
    """How the judge grades one response (MT-Bench single-answer style, 1-10)."""

    template: str = Field("judge_single", description="Judge prompt template name in pipelines/templates.")
    max_new_tokens: int = Field(
        512,
        gt=0,
        description="Budget for the judge's explanation and verdict. Grammar-constrained backends "
        "(the embedded model) emit only the verdict.",
    )
    temperature: float = Field(0.0, ge=0.0, description="Judge sampling temperature.")
    scoring: Literal["auto", "expected", "sampled"] = Field(
        "auto",
        description="expected: the grade is sum p(k)*k over the rating tokens' log-probabilities "
        "(G-Eval), so MFD is continuous and stable run to run; sampled: the number the judge wrote; "
        "auto: expected where the judge's backend returns log-probabilities (llamacpp, vllm, openai, "
        "scripted), else sampled. Use temperature 0 with expected: a sampled digit decides whether a "
        "'1' may begin a '10', which makes T=1 expected grades unstable (BENCHMARKS.md).",
    )
    top_logprobs: int = Field(
        20,
        ge=2,
        le=20,
        description="Alternatives asked per generated token when scoring is expected (OpenAI allows 20).",
    )


class DifficultySettings(StrictModel):
    """Model Fitting Difficulty: MFD = judge(teacher) - judge(student) (METHOD step 4)."""

    delta: float = Field(
        1.0,
        ge=-9.0,
        le=9.0,
        description="An instruction is hard for the student when MFD >= delta (as Lion; MFD lies in "
        "[-9, 9], so with integer grades delta 1 makes a one-point gap hard).",
    )
    min_teacher_score: float | None = Field(
        None,
        ge=1.0,
        le=10.0,
        description="Drop rows whose teacher response the judge scores below this (not worth distilling).",
    )


class OfflineClassifierSettings(StrictModel):
    """The offline task classifier (``taxonomy.classifier: offline``): a logistic regression on
    sentence features of labelled instructions. Every label it was trained on must be a taxonomy
    label; labels it never saw are never predicted."""

    rows: str = Field(
        "embedded",
        description="Labelled instructions: embedded (tapir's 237, one to 18 per EasyDistill label) or a "
        "local .jsonl/.json/.parquet file with instruction, optional input, and label_column.",
    )
    label_column: str = Field("task", description="The label column of a local rows file.")
    features: Literal["embedded", "tfidf"] = Field(
        "embedded",
        description="embedded: mean-pooled Gemma 3 270M embeddings (the embedded GGUF, in process); "
        "tfidf: word and character n-grams (no model, much weaker).",
    )
    folds: int = Field(5, ge=2, le=20, description="Cross-validation folds for the held-out accuracy.")


class TaxonomySettings(StrictModel):
    """Task labels and the target task mix for re-balancing (METHOD steps 5 and 7)."""

    labels: list[str] = Field(
        default_factory=lambda: list(EASYDISTILL_TAXONOMY),
        description="The task labels the classifier picks from (default: EasyDistill's 32).",
    )
    target_mix: dict[str, float] = Field(
        default_factory=easydistill_target_mix,
        description="Share of each label after re-balancing; labels left out get share 0. Must "
        "sum to 1 (within 0.02; it is then normalised).",
    )
    fallback_label: str = Field("Others", description="Label the classifier may always answer.")
    classifier: Literal["llm", "offline"] = Field(
        "llm",
        description="llm: the classifier_role's model picks a label; offline: a logistic regression "
        "trained on labelled rows (taxonomy.offline), no LLM calls, its held-out accuracy reported.",
    )
    classifier_role: Role = Field(
        "judge", description="Which role's model classifies tasks (classifier: llm)."
    )
    max_new_tokens: int = Field(16, gt=0, description="Budget for the classifier's answer.")
    offline: OfflineClassifierSettings = Field(default_factory=lambda: OfflineClassifierSettings())

    @model_validator(mode="after")
    def _check_mix(self) -> TaxonomySettings:
        if not self.labels:
            raise ValueError("labels: must list at least one task label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: contains duplicates")
        if self.fallback_label not in self.labels:
            raise ValueError(f"fallback_label: {self.fallback_label!r} is not one of the labels")
        unknown = sorted(set(self.target_mix) - set(self.labels))
        if unknown:
            raise ValueError(f"target_mix: unknown labels {unknown}")
        if any(v < 0 for v in self.target_mix.values()):
            raise ValueError("target_mix: shares must be >= 0")
        total = sum(self.target_mix.values())
        if not math.isclose(total, 1.0, abs_tol=0.02):
            raise ValueError(f"target_mix: shares sum to {total:.3f}, expected 1")
        return self

    def normalised_mix(self) -> dict[str, float]:
        total = sum(self.target_mix.values())
        return {label: self.target_mix.get(label, 0.0) / total for label in self.labels}


class ExpansionSettings(StrictModel):
    """Lion-style expansion: the teacher writes new instructions like the hard seeds (step 6)."""

    enabled: bool = Field(True, description="Expand hard seeds with new instructions (off: seeds only).")
    allocation: Literal["mix", "uniform"] = Field(
        "mix",
        description="mix (the paper's): the budget goes to tasks by their deficit against "
        "taxonomy.target_mix, from their hard seeds, else their easy seeds, else the label alone; "
        "uniform (Lion's): per_hard_seed new instructions for every hard seed.",
    )
    budget: int | None = Field(
        None,
        ge=0,
        description="New instructions in all (allocation mix); default: per_hard_seed x the hard "
        "seeds expanded, what uniform would write.",
    )
    per_hard_seed: int = Field(2, ge=1, description="New instructions written per hard seed.")
    max_hard_seeds: int | None = Field(None, gt=0, description="Expand at most this many hard seeds.")
    template: str = Field("expand_instruction", description="Expansion prompt template name.")
    max_new_tokens: int = Field(128, gt=0, description="Budget for one new instruction.")
    temperature: float = Field(0.9, ge=0.0, description="Higher than usual, for diverse instructions.")


class RebalanceSettings(StrictModel):
    """Resample toward ``taxonomy.target_mix``, up- and down-sampling (step 7)."""

    enabled: bool = Field(True, description="Resample toward the target mix (off: the selection as graded).")
    size: int | None = Field(
        None,
        gt=0,
        description="Rows per difficulty bucket (easy/hard) after re-balancing; default: the "
        "bucket's size before re-balancing.",
    )
    max_copies: int | None = Field(
        4,
        ge=1,
        description="At most this many copies of one row when up-sampling (null: no cap); a label "
        "that would need more gets fewer rows than its target share.",
    )


class RefinementSettings(StrictModel):
    """Task-aware response refinement by the teacher (step 8)."""

    enabled: bool = Field(
        True,
        description="Rewrite the teacher's answers with task-aware prompts (off: train on them as written).",
    )
    prompts: dict[str, str] = Field(
        default_factory=lambda: {
            "Math": "refine_reasoning",
            "Reasoning": "refine_reasoning",
            "Code Generation": "refine_code",
            "Code Debug": "refine_code",
            "Writing": "refine_writing",
            "Roleplay": "refine_writing",
        },
        description="Task label -> refinement template name (pipelines/templates/<name>.jinja2).",
    )
    default_prompt: str = Field("refine_general", description="Template for labels not listed in prompts.")
    max_new_tokens: int = Field(512, gt=0, description="Budget for one refined answer.")


class DecontaminationSettings(StrictModel):
    """Benchmark prompts kept out of the training data: rows matching one are excluded before
    re-balancing and counted per benchmark (exact, normalised, or a shared word n-gram)."""

    enabled: bool = Field(True, description="Exclude rows that match a benchmark prompt before re-balancing.")
    alpaca_eval: str | None = Field(
        "embedded",
        description="AlpacaEval 2.0 instructions: 'embedded' (all 805, shipped with tapir), a JSON/JSONL "
        "file with 'instruction', an https URL or hf://datasets/ file; null skips it.",
    )
    mt_bench: str | None = Field(
        "embedded",
        description="MT-Bench questions (every turn): 'embedded' (fschat's 80, shipped), a question.jsonl "
        "path or URL; null skips it.",
    )
    ngram: int = Field(13, ge=4, description="Word n-gram length of the overlap test (open-instruct: 13).")


class CurriculumSettings(StrictModel):
    """Rounds whose share of hard examples grows, easy -> hard (step 9)."""

    rounds: int = Field(3, ge=1, description="Number of curriculum rounds R.")
    hard_share: list[float] = Field(
        default_factory=lambda: [0.3, 0.6, 0.9],
        description="Share of hard examples in each round (one value per round).",
    )
    round_size: int | None = Field(
        None,
        gt=0,
        description="Examples per round (default: as many as the schedule allows without "
        "reusing an example within a round).",
    )
    round_sizes: list[int] | None = Field(
        None,
        description="Examples per round, one value per round (rounds may grow), instead of round_size.",
    )
    carry_over: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of the previous round's examples replayed in the next round; otherwise "
        "an example is in at most one round.",
    )
    warmup_size: int = Field(
        16,
        ge=0,
        description="Random teacher examples for the student's warm-up SFT before round 1.",
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> CurriculumSettings:
        if len(self.hard_share) != self.rounds:
            raise ValueError(f"hard_share: has {len(self.hard_share)} values but rounds is {self.rounds}")
        bad = [s for s in self.hard_share if not 0.0 <= s <= 1.0]
        if bad:
            raise ValueError(f"hard_share: values must lie in [0, 1], got {bad}")
        if any(later < earlier for earlier, later in zip(self.hard_share, self.hard_share[1:])):
            # Refused, not warned: a curriculum runs easy -> hard (METHOD step 9).
            raise ValueError(f"hard_share: must not decrease from round to round, got {self.hard_share}")
        if self.round_sizes is not None:
            if self.round_size is not None:
                raise ValueError("round_sizes: give round_sizes or round_size, not both")
            if len(self.round_sizes) != self.rounds:
                raise ValueError(
                    f"round_sizes: has {len(self.round_sizes)} values but rounds is {self.rounds}"
                )
            if any(size <= 0 for size in self.round_sizes):
                raise ValueError(
                    f"round_sizes: every round needs at least one example, got {self.round_sizes}"
                )
        return self


class RunnerSettings(StrictModel):
    """Which distilabel runner executes the step graph. Scale comes from Ray, not from us."""

    runner: Literal["local", "ray"] = Field(
        "local", description="local processes or distilabel's Ray runner."
    )
    ray_address: str | None = Field(
        None,
        description="runner: ray: the cluster's head (host:port, as `ray start --head` prints it). "
        "Unset: a single-node Ray instance on this machine, on loopback.",
    )
    engine_host: str = Field(
        "127.0.0.1",
        description="The address tapir's own engines (llama.cpp, vLLM, scripted) bind and their "
        "clients dial. Loopback by default; with runner: ray on several nodes, this machine's "
        "address on the network the Ray workers share.",
    )
    batch_size: int = Field(8, gt=0, description="Rows per batch sent to each step.")
    max_spend_usd: float | None = Field(
        None,
        gt=0,
        description="Spend cap in $ for one data run, from the roles' price_per_million_tokens "
        "(`tapir data --max-spend` sets it too). A run whose upper-bound estimate exceeds it does "
        "not start; a running pass stops asking once its measured spend reaches it (requests in "
        "flight finish), keeps every answer cached and exits 3: a rerun goes on from there.",
    )
    replicas: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "Worker processes per LLM step whose model is served (an engine or endpoint; "
            "distilabel's step replicas). A step waits for its whole batch, so against a slow or "
            "flaky endpoint one batch's retried stragglers leave max_concurrency idle; 2 keeps "
            "a second batch in flight. In-process models always run 1."
        ),
    )


class LoraSettings(StrictModel):
    """Parameter-efficient training with peft. Adapters are merged into the weights at the end
    of each round, so every round's checkpoint is a plain model the next round, the closed loop
    and evaluation can load without peft."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' (peft's shorthand)."
    )


#: Training fields that are TRL ``SFTConfig`` fields of the same name and meaning, passed as they are.
SFT_FIELDS = (
    "num_train_epochs",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "packing",
    "assistant_only_loss",
    "bf16",
    "fp16",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "report_to",
)


class TrainingSettings(StrictModel):
    """Staged curriculum SFT with TRL ``SFTTrainer`` (METHOD step 10). The optimisation fields
    carry TRL ``SFTConfig``'s own names and meaning (``SFT_FIELDS``, passed as they are, as the
    alignment-handbook's configs are); ``sft_options`` passes any other SFTConfig field verbatim.
    The rest is tapir's: where rounds start and go, the closed loop, LoRA, the launcher."""

    model: str | None = Field(
        None,
        description="Model to start round 1 from: a Hub id or a local folder. Default: the "
        "student's model ('embedded' is converted once from its GGUF to a transformers folder).",
    )
    chat_template: str | None = Field(
        None,
        description="Chat template for a base model without one, by name (tapir_chat) or file (default: "
        "student.chat_template, else the tokenizer's own; the embedded student uses "
        "tapir's). Must wrap the assistant turn, its EOS included, in {% generation %} markers.",
    )
    output_dir: str | None = Field(
        None, description="Where round checkpoints go (default: <output_dir>-checkpoints)."
    )
    warmup_round: bool = Field(
        True, description="Train on data/warmup.parquet (random teacher examples) before round 1."
    )
    mfd_student: Literal["warmed_up", "base"] = Field(
        "warmed_up",
        description="Which student MFD grades for the curriculum rounds. warmed_up (the paper's): "
        "after the warm-up round its checkpoint answers the pool again, the judge grades it, and "
        "the rounds are built from that; base: the data pass's untrained student. Needs a warm-up "
        "round (warmup_round and curriculum.warmup_size); without one the base student grades.",
    )
    closed_loop: bool = Field(
        False,
        description="After round r, re-generate student answers with the new checkpoint, re-grade "
        "them, recompute MFD and build round r+1 from what is still hard (`make distill`).",
    )
    rescore_backend: CheckpointServing = Field(
        "auto",
        description="Engine that serves the new checkpoint's answers in the closed loop: "
        "llamacpp (the checkpoint written back to GGUF; needs a student that came from a GGUF, "
        "like the embedded one), vllm (GPU clusters), transformers (in-process, CPU). auto: "
        "llamacpp for a GGUF-born student, else transformers.",
    )
    rescore_quantization: Literal["F16", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K"] = Field(
        "Q4_K_M",
        description="GGUF type of a checkpoint served by llama.cpp (the embedded student's own is Q4_K_M).",
    )
    rescore_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra arguments for that engine's distilabel LLM."
    )
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs over each round's data (paper: 3).")
    max_steps: int | None = Field(
        None, gt=0, description="Optimizer steps per round; overrides num_train_epochs (a small CPU budget)."
    )
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (paper: 2e-5).")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name.")
    warmup_steps: float = Field(
        0.03,
        ge=0.0,
        description="Linear LR warm-up: a float below 1 is a share of the round's steps, 1 or more a "
        "number of steps (SFTConfig's meaning).",
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    per_device_train_batch_size: int = Field(4, gt=0, description="Sequences per device per micro-step.")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Micro-steps per optimizer step. Global batch = this x per-device x devices."
    )
    max_length: int = Field(
        2048, gt=0, description="Tokens per training sequence (longer ones are truncated; paper: 2048)."
    )
    packing: bool = Field(False, description="Pack several conversations into each sequence (TRL BFD).")
    assistant_only_loss: bool = Field(True, description="Loss on assistant tokens only (the answer + EOS).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype at load (auto: the checkpoint's own)."
    )
    bf16: bool = Field(False, description="bf16 mixed precision (paper-scale GPUs).")
    fp16: bool = Field(False, description="fp16 mixed precision.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    logging_steps: int = Field(1, gt=0, description="Log loss and learning rate every N optimizer steps.")
    report_to: list[str] = Field(
        default_factory=lambda: ["none"],
        description="Experiment trackers the trainer reports to, as TRL/transformers' report_to: "
        "none, tensorboard (event files in <round folder>/tensorboard: `tensorboard --logdir "
        "<training.output_dir>`), wandb, trackio, mlflow, ... (the tracker's package must be "
        "installed; its own settings come from its environment variables). Runs are named "
        "<recipe name>/<round>.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    save_steps: int = Field(
        50, gt=0, description="Checkpoint every N steps; an interrupted round resumes from the last."
    )
    save_total_limit: int = Field(2, gt=0, description="Mid-round checkpoints kept on disk.")
    keep_checkpoints: bool = Field(
        False, description="Keep mid-round checkpoints after the round's final model is saved."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    launcher: Literal["python", "accelerate"] = Field(
        "python",
        description="python: train in this process. accelerate: each round runs under "
        "`accelerate launch --config_file <accelerate_config>` (multi-GPU, DeepSpeed).",
    )
    accelerate_config: str | None = Field(
        None, description="accelerate config YAML for launcher: accelerate (e.g. DeepSpeed ZeRO-3)."
    )
    sft_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra SFTConfig fields passed verbatim (e.g. use_liger_kernel: true).",
    )

    @model_validator(mode="after")
    def _check_training(self) -> TrainingSettings:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16: choose one mixed-precision mode")
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("accelerate_config: required when launcher is accelerate")
        return self


#: FastChat's MT-Bench data (lm-sys/FastChat, fastchat/llm_judge/data): the PyPI wheel ships none.
FASTCHAT_DATA = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data"
#: fschat's gen_model_answer temperatures per MT-Bench category (fastchat.llm_judge.common).
MT_BENCH_TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}


class AlpacaEvalSettings(StrictModel):
    """AlpacaEval 2.0: the student's answers against the reference outputs, judged pairwise."""

    enabled: bool = Field(True, description="Run AlpacaEval 2.0 in `tapir eval`.")
    reference: str = Field(
        "hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline.json",
        description="Instructions + reference outputs: local JSON/JSONL, https URL or hf://datasets/ file.",
    )
    limit: int | None = Field(
        None,
        gt=0,
        description="Evaluate this many instructions (alpaca_eval's seeded shuffle); None = all 805.",
    )
    annotator: str = Field(
        "judge",
        description="'judge': the eval judge with alpaca_eval's prompt; "
        "'alpaca_eval:<config>': alpaca_eval's own annotator (its API clients).",
    )
    prompt: str = Field(
        "alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt",
        description="alpaca_eval prompt template (relative to its evaluators_configs) for annotator 'judge'.",
    )
    difficulty: str | None = Field(
        None,
        description="LC win rate's instruction difficulty: alpaca_eval's instruction_difficulty.csv or "
        "df_gamed.csv, or a folder of annotation JSONs to estimate it from; None = alpaca_eval's download.",
    )
    randomize_order: bool = Field(
        True, description="Show the two outputs in a seeded random order, as alpaca_eval does."
    )
    max_new_tokens: int = Field(1024, gt=0, description="Answer budget per instruction.")
    temperature: float = Field(0.0, ge=0.0, description="Answer sampling temperature (0 = greedy).")
    judge_max_new_tokens: int = Field(
        16, gt=0, description="Verdict budget (the prompt asks for 'm' or 'M')."
    )


class MTBenchSettings(StrictModel):
    """MT-Bench: 80 two-turn questions, single-answer grading 1-10 with fschat's prompts."""

    enabled: bool = Field(True, description="Run MT-Bench in `tapir eval`.")
    questions: str = Field(
        f"{FASTCHAT_DATA}/mt_bench/question.jsonl", description="question.jsonl (path or URL)."
    )
    judge_prompts: str = Field(
        f"{FASTCHAT_DATA}/judge_prompts.jsonl", description="judge_prompts.jsonl (path or URL)."
    )
    reference_answers: str = Field(
        f"{FASTCHAT_DATA}/mt_bench/reference_answer/gpt-4.jsonl",
        description="Reference answers for math, reasoning and coding (path or URL).",
    )
    per_category: int | None = Field(
        None, gt=0, description="Evaluate the first N questions of each category; None = all 10."
    )
    max_new_tokens: int = Field(1024, gt=0, description="Answer budget per turn (fschat: 1024).")
    temperatures: dict[str, float] = Field(
        default_factory=lambda: dict(MT_BENCH_TEMPERATURES),
        description="Sampling temperature per category (fschat's defaults).",
    )
    judge_max_new_tokens: int = Field(2048, gt=0, description="Judgment budget (fschat: 2048).")
    scoring: Literal["auto", "expected", "written"] = Field(
        "auto",
        description="How a grade is read. written: the number the judge wrote (FastChat's reading, "
        "the one published MT-Bench scores use). expected: sum p(k)*k over the rating tokens' "
        "log-probabilities (G-Eval, as the data pass reads MFD grades; judging.top_logprobs "
        "alternatives), so grades are continuous and a small judge does not give every answer the "
        "same number; needs a judge whose backend returns log-probabilities. auto: expected for a "
        "judge tapir serves itself (llamacpp, vllm, scripted), written for an endpoint.",
    )


class EvaluationSettings(StrictModel):
    """``tapir eval``: which models, which benchmarks, which judge, where results go."""

    models: list[str] = Field(
        default_factory=lambda: ["rounds"],
        description="'rounds' = every trained round; 'curriculum' = the trained rounds after the warmup; "
        "'student' = the untrained student; folders; Hub ids; name=folder files a folder under that name.",
    )
    baselines: list[str] = Field(
        default_factory=list, description="More models to evaluate beside ours (folders or Hub ids)."
    )
    backend: CheckpointServing = Field(
        "auto",
        description="What answers the benchmarks: llamacpp (a GGUF-born student and its "
        "checkpoints, written back to GGUF and served like the pipeline's models), vllm (`vllm "
        "serve` per model, GPUs), transformers (batched in-process). auto: llamacpp where the "
        "model came from a GGUF, else transformers.",
    )
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="`vllm serve` flags (vllm), llama.cpp engine options (llamacpp) or "
        "from_pretrained(...) arguments (transformers).",
    )
    devices: list[int] | None = Field(
        None,
        description="GPUs the evaluated model's engine may use (vllm, llamacpp; CUDA_VISIBLE_DEVICES). "
        "Unset: every GPU, refused beside another GPU engine of the run without its own devices.",
    )
    batch_size: int = Field(8, gt=0, description="Prompts per generation batch.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype.")
    judge: ModelSpec | None = Field(None, description="Judge for evaluation (default: the recipe's judge).")
    judge_batch_size: int = Field(8, gt=0, description="Judge prompts per call batch.")
    judge_retries: int = Field(1, ge=0, description="Re-asks (sampled) of a verdict that does not parse.")
    constrain_judge: bool = Field(
        True, description="llama.cpp judges: a grammar makes the verdict follow the benchmark's format."
    )
    output_dir: str | None = Field(None, description="Where results go (default: outputs/<name>-eval).")
    published: list[str] = Field(
        default_factory=lambda: [
            "gpt4_1106_preview",
            "gpt-3.5-turbo-1106",
            "vicuna-13b-v1.3",
            "vicuna-13b",
            "llama-2-7b-chat-hf",
            "alpaca-7b",
            # the TAPIR paper's two AlpacaEval baselines, last: right above the paper's rows
            "vicuna-13b-v1.5",
            "llama-2-13b-chat-hf",
        ],
        description="Rows of alpaca_eval's AlpacaEval 2.0 leaderboard to show beside ours.",
    )
    paper_rows: bool = Field(True, description="Show the TAPIR paper's reported rows.")
    price_per_million_tokens: dict[str, float] | None = Field(
        None, description="Judge price {input: $, output: $} per million tokens, for the cost column."
    )
    alpaca_eval: AlpacaEvalSettings = Field(default_factory=AlpacaEvalSettings)
    mt_bench: MTBenchSettings = Field(default_factory=MTBenchSettings)

    @model_validator(mode="after")
    def _check_evaluation(self) -> EvaluationSettings:
        if not self.models and not self.baselines:
            raise ValueError("models: name at least one model (or baselines)")
        if self.alpaca_eval.annotator != "judge" and not self.alpaca_eval.annotator.startswith(
            "alpaca_eval:"
        ):
            raise ValueError("alpaca_eval.annotator: 'judge' or 'alpaca_eval:<annotator config>'")
        try:
            check_price(self.price_per_million_tokens)
        except ValueError as exc:
            raise ValueError(f"price_per_million_tokens: {exc}") from None
        check_devices_fit(self.devices, self.backend, self.backend_options, "backend_options")
        return self


class ArgillaSettings(StrictModel):
    """Where the review server is. URL and workspace come from here or the environment; the API
    key only from the environment, so it never lands in a recipe, a log or an artifact."""

    api_url: str | None = Field(None, description="Argilla server URL (default: $ARGILLA_API_URL).")

    @field_validator("api_url")
    @classmethod
    def _api_url_is_http(cls, value: str | None) -> str | None:
        return check_http_url(value)

    api_key_env: str = Field(
        "ARGILLA_API_KEY", description="Name of the environment variable holding the Argilla API key."
    )
    workspace: str | None = Field(
        None, description="Argilla workspace (default: $ARGILLA_WORKSPACE, else 'argilla')."
    )
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout.")


class ReviewSettings(StrictModel):
    """Human spot-checks in Argilla (``tapir review push|pull``) and how the answers feed the
    next ``tapir data``."""

    argilla: ArgillaSettings = Field(default_factory=ArgillaSettings)
    round: int | Literal["warmup"] = Field(1, description="Curriculum round to sample (or 'warmup').")
    sample_size: int = Field(
        24, gt=0, description="Records to send, stratified by task label x difficulty bucket."
    )
    mfd_edges: list[float] | None = Field(
        None,
        description="MFD bucket edges for the stratification, e.g. [0, 2, 4] (default: the run's "
        "hard/easy split at difficulty.delta).",
    )
    dataset: str = Field(
        "{name}-{split}", description="Argilla dataset name; {name} = recipe name, {split} = round."
    )
    reviewers_per_record: int = Field(
        1, ge=1, description="Submitted answers after which a record counts as complete (Argilla's)."
    )
    suggestions: bool = Field(
        True, description="Pre-fill the label and judge questions with the classifier's and judge's answers."
    )
    output_dir: str | None = Field(
        None, description="Where pulled answers go (default: outputs/<name>-review, beside the data)."
    )
    apply: bool = Field(True, description="`tapir data` reads the pulled answers and applies them.")
    drop_rejected: bool = Field(True, description="Rows reviewers rejected leave the selection.")
    override_labels: bool = Field(True, description="Reviewers' task labels replace the classifier's.")
    use_fixes: bool = Field(
        True, description="A reviewer's corrected response becomes the response trained on."
    )

    @field_validator("mfd_edges")
    @classmethod
    def _edges_increase(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or any(b <= a for a, b in zip(value, value[1:]))):
            raise ValueError("must be a non-empty, strictly increasing list of MFD values")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset_template(cls, value: str) -> str:
        try:
            value.format(name="n", split="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{name}} and {{split}} may be used ({exc})") from None
        return value


class HubSettings(StrictModel):
    """``tapir push``: a curated dataset (or, with --model, a trained checkpoint) to the Hugging Face Hub."""

    repo_id: str | None = Field(None, description="Dataset repo, org/name (or --repo-id).")
    model_repo_id: str | None = Field(
        None, description="Model repo for `tapir push --model`, org/name (or --repo-id)."
    )
    private: bool = Field(True, description="Create the repo private.")
    token_env: str = Field("HF_TOKEN", description="Environment variable holding the Hub token.")
    round: int | Literal["warmup", "all"] = Field(
        "all", description="What to push: every split ('all'), 'warmup' or one round number."
    )
    output_dir: str | None = Field(
        None, description="Where --dry-run writes the upload (default: outputs/<name>-hub)."
    )

    @field_validator("repo_id", "model_repo_id")
    @classmethod
    def _repo_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.\-]+/[\w.\-]+", value):
            raise ValueError("must look like org/name")
        return value


class Recipe(StrictModel):
    """A whole TAPIR run."""

    name: str = Field(
        ...,
        max_length=100,
        description="Run name; names the output folder and the distilabel cache.",
    )
    description: str = Field("", description="One line about the run (shown in the dataset card).")
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,
        description="Seed for sampling, shuffling, re-balancing and curriculum (0 to 2^32-1, numpy's range).",
    )
    output_dir: str | None = Field(None, description="Where results go (default: outputs/<name>).")
    cache_dir: str = Field(
        ".cache/tapir", description="distilabel cache; an unchanged re-run makes no LLM calls."
    )

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir_is_a_folder(cls, value: str) -> str:
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{value} is a file, not a folder")
        return value

    teacher: ModelSpec = Field(default_factory=ModelSpec)
    student: ModelSpec = Field(default_factory=ModelSpec)
    judge: ModelSpec = Field(default_factory=ModelSpec)
    seeds: SeedSource = Field(default_factory=SeedSource)
    judging: JudgingSettings = Field(default_factory=JudgingSettings)
    difficulty: DifficultySettings = Field(default_factory=DifficultySettings)
    taxonomy: TaxonomySettings = Field(default_factory=TaxonomySettings)
    expansion: ExpansionSettings = Field(default_factory=ExpansionSettings)
    rebalance: RebalanceSettings = Field(default_factory=RebalanceSettings)
    refinement: RefinementSettings = Field(default_factory=RefinementSettings)
    decontamination: DecontaminationSettings = Field(default_factory=DecontaminationSettings)
    curriculum: CurriculumSettings = Field(default_factory=CurriculumSettings)
    pipeline: RunnerSettings = Field(default_factory=RunnerSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    hub: HubSettings = Field(default_factory=HubSettings)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\ ") or value.startswith("."):
            raise ValueError("must be a non-empty folder name without spaces or slashes")
        return value

    @model_validator(mode="after")
    def _check_refinement_labels(self) -> Recipe:
        unknown = sorted(set(self.refinement.prompts) - set(self.taxonomy.labels))
        if unknown and "prompts" in self.refinement.model_fields_set:
            raise ValueError(f"refinement.prompts: labels not in taxonomy.labels: {unknown}")
        if unknown:  # the defaults name EasyDistill labels a custom taxonomy may not have
            kept = {k: v for k, v in self.refinement.prompts.items() if k in self.taxonomy.labels}
            object.__setattr__(self.refinement, "prompts", kept)
        return self

    @model_validator(mode="after")
    def _check_judge_generation(self) -> Recipe:
        # The judge grades with judging.* and labels with taxonomy.*; a budget or temperature
        # under judge.generation would change nothing yet mark the data stale.
        defaults = GenerationSettings()
        unused = [
            name
            for name in ("max_new_tokens", "temperature")
            if getattr(self.judge.generation, name) != getattr(defaults, name)
        ]
        if unused:
            raise ValueError(
                f"judge.generation: {' and '.join(unused)} would have no effect: the judge grades with "
                "judging.max_new_tokens and judging.temperature (and labels with taxonomy.max_new_tokens)"
            )
        return self

    @model_validator(mode="after")
    def _check_judge_scoring(self) -> Recipe:
        if self.judging.scoring == "expected" and self.judge.backend not in LOGPROB_BACKENDS:
            raise ValueError(
                f"judging.scoring: expected needs log-probabilities, which the {self.judge.backend} "
                f"backend does not return (use sampled, or a judge on {', '.join(LOGPROB_BACKENDS)})"
            )
        return self

    @property
    def judge_scoring(self) -> Literal["expected", "sampled"]:
        """How the MFD judge's grades are read (``judging.scoring`` with auto resolved)."""
        if self.judging.scoring == "auto":
            return "expected" if self.judge.backend in LOGPROB_BACKENDS else "sampled"
        return self.judging.scoring

    @property
    def evaluation_judge(self) -> ModelSpec:
        """The judge ``tapir eval`` uses (``evaluation.judge``, else the recipe's judge)."""
        return self.evaluation.judge or self.judge

    @property
    def mt_bench_scoring(self) -> Literal["expected", "written"]:
        """How MT-Bench grades are read (``evaluation.mt_bench.scoring`` with auto resolved)."""
        chosen = self.evaluation.mt_bench.scoring
        if chosen == "auto":
            judge = backend_of(self.evaluation_judge.backend)
            return "expected" if judge.logprobs and judge.started_by_tapir else "written"
        return chosen

    @model_validator(mode="after")
    def _check_mt_bench_scoring(self) -> Recipe:
        backend = self.evaluation_judge.backend
        if self.evaluation.mt_bench.scoring == "expected" and backend not in LOGPROB_BACKENDS:
            raise ValueError(
                f"evaluation.mt_bench.scoring: expected needs log-probabilities, which the {backend} "
                f"backend does not return (use written, or a judge on {', '.join(LOGPROB_BACKENDS)})"
            )
        return self

    @model_validator(mode="after")
    def _check_rounds_exist(self) -> Recipe:
        for section in ("review", "hub"):
            chosen = getattr(self, section).round
            if isinstance(chosen, int) and not 1 <= chosen <= self.curriculum.rounds:
                raise ValueError(
                    f"{section}.round: {chosen} is not a round of this curriculum "
                    f"(1..{self.curriculum.rounds})"
                )
        return self

    def role(self, role: Role) -> ModelSpec:
        return getattr(self, role)

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("outputs") / self.name

    @property
    def resolved_train_dir(self) -> Path:
        return self._beside_output(self.training.output_dir, "checkpoints")

    @property
    def resolved_eval_dir(self) -> Path:
        return self._beside_output(self.evaluation.output_dir, "eval")

    @property
    def resolved_review_dir(self) -> Path:
        return self._beside_output(self.review.output_dir, "review")

    @property
    def resolved_hub_dir(self) -> Path:
        return self._beside_output(self.hub.output_dir, "hub")

    def _beside_output(self, chosen: str | None, suffix: str) -> Path:
        """A stage's folder: the one the recipe names, else ``<output_dir>-<suffix>`` beside it."""
        if chosen:
            return Path(chosen)
        data = self.resolved_output_dir
        return data.parent / f"{data.name}-{suffix}"

    def fingerprint(self) -> str:
        """Hash of the resolved recipe: what the manifest records to say which run made a file."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- loading -------------------------------------------------------------------------------


def _format_validation_error(error: ValidationError, origin: str) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif "input" in item and item["type"] not in ("missing",) and not isinstance(item["input"], dict):
            msg = f"{msg} (got {item['input']!r})"
        field = re.match(r"^([A-Za-z_][\w.]*): ", msg)  # a section validator naming its field
        if loc and field:
            parts.append(f"{loc}.{msg}")
        else:
            parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{origin}: " + "; ".join(parts)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value), the value read as YAML so types survive."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. judge.model=gpt-4o")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RecipeError(f"--set {text!r}: empty key")
    if "\x00" in raw:
        raise RecipeError(f"--set {key}: holds a NUL byte, which no name, path or prompt may")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise RecipeError(f"--set {key}: value is not valid YAML ({problem})") from None
    except RecipeError as exc:
        raise RecipeError(f"--set {key}: {exc}") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {'.'.join(path)}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so a misplaced duplicate section would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """YAML as a recipe reads it: no duplicate keys, no nesting past ``MAX_YAML_DEPTH``, no
    alias expanding past ``MAX_YAML_VALUES``."""
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader (duplicate keys refused)
    except RecursionError:
        raise RecipeError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    if _depth(data) > MAX_YAML_DEPTH:
        raise RecipeError(f"nested more than {MAX_YAML_DEPTH} levels deep")
    if _expanded_size(data, {}) > MAX_YAML_VALUES:
        raise RecipeError(
            f"its anchors and aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?)"
        )
    return data


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in ``value`` (walked without recursion)."""
    deepest, stack, seen = 0, [(value, 1)], set()
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in seen:
            continue
        seen.add(id(node))
        deepest = max(deepest, depth)
        if depth > MAX_YAML_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _expanded_size(value: Any, seen: dict[int, int]) -> int:
    """How many values ``value`` holds once every alias is expanded, counted without expanding
    (a shared list or mapping is counted once per reference, its size computed once)."""
    if not isinstance(value, (dict, list)):
        return 1
    known = seen.get(id(value))
    if known is not None:
        return known
    seen[id(value)] = 1  # a cycle (a recursive alias) counts once
    children = value.values() if isinstance(value, dict) else value
    size = 1 + sum(min(_expanded_size(child, seen), MAX_YAML_VALUES + 1) for child in children)
    seen[id(value)] = min(size, MAX_YAML_VALUES + 1)
    return seen[id(value)]


def credential_name(key: str) -> bool:
    """Whether a key or header named ``key`` would hold a credential (``*_env`` names a variable)."""
    name = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
    return bool(CREDENTIAL_KEY.search(name)) and not name.endswith("_env")


def url_credential(value: str) -> str | None:
    """What in URL ``value`` is a credential (user-info, a key-like query parameter), or None."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(value.strip())
        username, password = parts.username, parts.password
    except ValueError:
        return None
    if username or password:
        return "user-info (user:password@)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True) + parse_qsl(
        parts.fragment, keep_blank_values=True
    ):
        plain = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        if credential_name(name) or CREDENTIAL_QUERY.match(plain):
            return f"query parameter {name!r}"
    return None


def credential_fields(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(field, what) for every recipe field that holds a credential itself: a key-like option or
    header of any spelling at any depth, a URL with user-info or a key in its query, a value
    shaped like a token. A recipe is copied into manifests, dataset cards and logs; keys live in
    the environment."""
    from tapir.manifest import looks_like_secret

    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            field = f"{prefix}{key}"
            if isinstance(key, str) and credential_name(key) and value not in (None, "", {}, []):
                found.append((field, f"{key!r} names a credential"))
            else:
                found += credential_fields(value, f"{field}.")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += credential_fields(value, f"{prefix}{index}.")
    elif isinstance(data, str):
        field = prefix.rstrip(".")
        if data.strip().lower().startswith(("http://", "https://")) and (what := url_credential(data)):
            found.append((field, f"a URL with a credential in its {what}"))
        elif looks_like_secret(data):
            found.append((field, "a value shaped like a key or token"))
    return found


def _refuse_credentials(data: dict[str, Any], origin: str) -> None:
    fields = credential_fields(data)
    if not fields:
        return
    field, what = fields[0]
    role = field.split(".")[0]
    hint = f"{role}.api_key_env" if role in ("teacher", "student", "judge") else "the section's *_env field"
    raise RecipeError(
        f"{origin}: {field}: holds a credential ({what}), which would be copied into manifests, cards "
        f"and logs; put it in an environment variable and name that variable in {hint}"
    )


def packaged_recipes() -> dict[str, Path]:
    """The recipes tapir ships (the ``recipes/`` folder, installed as ``tapir.recipes``), by name."""
    from importlib.resources import files

    folder = Path(str(files("tapir.recipes")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def resolve_recipe_path(value: str | Path) -> Path:
    """A recipe file, or the name of one tapir ships (``default``, ``paper-llama2-7b``): a file
    of that name in the working folder wins, so an edited copy is never shadowed."""
    if "\x00" in str(value):
        raise RecipeError("--recipe: the path holds a NUL byte")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():  # a file, or a pipe (`--recipe <(...)`, /dev/stdin)
        return path
    text = str(value)
    if "/" not in text and "\\" not in text:
        found = packaged_recipes().get(text.removesuffix(".yaml"))
        if found is not None:
            return found
    names = ", ".join(packaged_recipes())
    raise RecipeError(
        f"recipe file not found: {path} (tapir ships the recipes {names}: give one by name, or "
        "`tapir init NAME` writes an editable copy)"
    )


def init_recipe(name: str, to: str | None = None) -> Path:
    """Copy the shipped recipe ``name`` to ``to`` (default ``./<name>.yaml``) for editing."""
    source = packaged_recipes().get(name.removesuffix(".yaml"))
    if source is None:
        raise RecipeError(f"init: tapir ships no recipe {name!r} (it ships {', '.join(packaged_recipes())})")
    if to is not None and "\x00" in to:
        raise RecipeError("init: --to holds a NUL byte")
    target = Path(to).expanduser() if to else Path(f"{source.stem}.yaml")
    if target.exists() or target.is_symlink():
        raise RecipeError(f"init: {target} exists; tapir never replaces it (give --to another file)")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(source.read_bytes())
        try:
            os.link(partial, target)  # whole or absent, and never over a file that appeared meanwhile
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV) or target.exists():
                raise
            os.replace(partial, target)  # a file system without hard links
    except FileExistsError as exc:
        if Path(exc.filename or "") == target:
            raise RecipeError(
                f"init: {target} exists; tapir never replaces it (give --to another file)"
            ) from None
        raise RecipeError(
            f"init: cannot write {target}: a part of the path is a file, not a folder"
        ) from None
    except NotADirectoryError:
        raise RecipeError(
            f"init: cannot write {target}: a part of the path is a file, not a folder"
        ) from None
    except OSError as exc:
        why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        raise RecipeError(f"init: cannot write {target}: {why}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return target


def load_recipe_dict(path: str | Path) -> dict[str, Any]:
    path = resolve_recipe_path(path)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))  # once: a pipe can be read only once
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start} is {byte:#04x})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: invalid YAML{where}: {problem}") from None
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    if data is None:
        raise RecipeError(f"{path}: recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def _nul_field(data: Any, prefix: str = "") -> str | None:
    """The first field whose key or text holds a NUL byte (no path, name or prompt can)."""
    if isinstance(data, dict):
        for key, value in data.items():
            field = f"{prefix}{key}"
            if "\x00" in str(key):
                return field
            if found := _nul_field(value, f"{field}."):
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            if found := _nul_field(value, f"{prefix}{index}."):
                return found
    elif isinstance(data, str) and "\x00" in data:
        return prefix.rstrip(".") or "recipe"
    return None


def recipe_from_dict(data: dict[str, Any], origin: str = "recipe") -> Recipe:
    if field := _nul_field(data):
        raise RecipeError(f"{origin}: {field}: holds a NUL byte, which no name, path or prompt may")
    _refuse_credentials(data, origin)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_format_validation_error(exc, origin)) from None
    treat_as_secret(*_credential_variables(recipe.model_dump()))
    return recipe


def _credential_variables(data: Any) -> list[str]:
    """Every ``*_env`` value in the recipe: the names of variables that hold keys and tokens."""
    if isinstance(data, dict):
        found = [v for k, v in data.items() if k.endswith("_env") and isinstance(v, str)]
        return found + [name for v in data.values() for name in _credential_variables(v)]
    if isinstance(data, list):
        return [name for v in data for name in _credential_variables(v)]
    return []


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply ``--set`` overrides, validate. Raises :class:`RecipeError`."""
    data = apply_overrides(load_recipe_dict(path), overrides or [])
    return recipe_from_dict(data, origin=str(path))


def field_reference(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field: the recipe's reference docs."""
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append((dotted, "", (info.description or annotation.__doc__ or "").strip()))
            rows.extend(field_reference(annotation, prefix=f"{dotted}."))
            continue
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        rows.append((dotted, default, info.description or ""))
    return rows
