"""AlpacaEval 2.0 for one model: answer the instructions, judge against the reference, score.

The judge sees alpaca_eval's own prompt (filled by alpaca_eval's ``make_prompts``), in a seeded
random order as alpaca_eval shows it, and its verdict is read with alpaca_eval's regex parser;
the scores are alpaca_eval's metrics (``alpaca_metrics``). With ``annotator:
alpaca_eval:<config>`` alpaca_eval's own annotator (and its API clients) judges instead.
Files are written in alpaca_eval's formats, so its tools read them too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from tapir.benchmark_sources import EMBEDDED, read_records, resolve, sample_file
from tapir.errors import DataError, EvaluationError
from tapir.evaluation import alpaca_metrics
from tapir.evaluation.answer_stats import GeneratedText, answer_stats
from tapir.evaluation.generation import Generator
from tapir.evaluation.judging import JudgeClient, JudgeStats
from tapir.manifest import write_json
from tapir.recipe import AlpacaEvalSettings

#: alpaca_eval's seed for the shuffle before taking max_instances (main.evaluate).
ALPACA_EVAL_SHUFFLE_SEED = 123
#: The clf prompt asks for a model identifier: "m" names the first output shown, "M" the second.
IDENTIFIERS = {1: r"(?:^|\s)[\"'`]?m[\"'`]?(?:$|[\s.])", 2: r"(?:^|\s)[\"'`]?M[\"'`]?(?:$|[\s.])"}


def check_annotator(settings: AlpacaEvalSettings) -> None:
    """``alpaca_eval:<name>`` must name one of alpaca_eval's configs or a configs.yaml file."""
    if not settings.annotator.startswith("alpaca_eval:"):
        return
    from alpaca_eval.constants import EVALUATORS_CONFIG_DIR

    config = settings.annotator.split(":", 1)[1]
    if not (Path(EVALUATORS_CONFIG_DIR) / config).is_dir() and not Path(config).is_file():
        raise EvaluationError(
            f"evaluation.alpaca_eval.annotator: {config!r} is neither an alpaca_eval config "
            "nor a configs.yaml file"
        )


def difficulty_source(settings: AlpacaEvalSettings) -> str | None:
    """``difficulty`` as a path (``embedded``: the packaged estimate for the packaged sample)."""
    field = "evaluation.alpaca_eval.difficulty"
    return str(sample_file(field)) if settings.difficulty == EMBEDDED else settings.difficulty


def load_reference(settings: AlpacaEvalSettings, cache_dir: str | Path) -> pd.DataFrame:
    """The instructions and reference outputs, in alpaca_eval's order (then sampled as it does)."""
    field = "evaluation.alpaca_eval.reference"
    rows = read_records(resolve(settings.reference, field, cache_dir), field)
    df = pd.DataFrame(rows)
    missing = [c for c in ("instruction", "output") if c not in df.columns]
    if missing:
        raise DataError(f"{field}: reference file lacks column(s) {', '.join(missing)}")
    empty = df["instruction"].fillna("").str.strip() == ""
    if empty.any():
        raise DataError(f"{field}: {int(empty.sum())} empty instruction(s)")
    df["generator"] = df.get("generator", pd.Series(["reference"] * len(df)))
    df["dataset"] = df.get("dataset", pd.Series(["alpaca_eval"] * len(df)))
    if "position" in df.columns:  # a sample, already in alpaca_eval's shuffled order (see samples/)
        df = df[: settings.limit] if settings.limit is not None else df
    else:
        df["position"] = range(len(df))  # where alpaca_eval's difficulty files look each row up
        if settings.limit is not None and settings.limit < len(df):
            df = df.sample(frac=1, random_state=ALPACA_EVAL_SHUFFLE_SEED)[: settings.limit]
    return df.reset_index(drop=True)


def generate(
    reference: pd.DataFrame, generator: Generator, settings: AlpacaEvalSettings, seed: int, name: str
) -> pd.DataFrame:
    conversations = [[{"role": "user", "content": i}] for i in reference["instruction"]]
    answers = generator.generate(conversations, settings.max_new_tokens, settings.temperature, seed)
    return pd.DataFrame(
        {
            "instruction": reference["instruction"],
            "output": [str(a) for a in answers],
            "generator": name,
            "dataset": reference["dataset"],
            # how long each answer is and whether it ended before the cap (answer_stats)
            "output_tokens": [getattr(a, "output_tokens", None) for a in answers],
            "ended": [getattr(a, "ended", None) for a in answers],
        }
    )


def _shown_first_is_model(instruction: str, seed: int) -> bool:
    return hashlib.sha256(f"{seed}|{instruction}".encode()).digest()[0] % 2 == 1


def judge_pairs(
    reference: pd.DataFrame,
    outputs: pd.DataFrame,
    judge: JudgeClient,
    settings: AlpacaEvalSettings,
    seed: int,
    stats: JudgeStats,
) -> pd.DataFrame:
    """alpaca_eval-format annotations: output_1 = reference, output_2 = model, preference 1 or 2."""
    from alpaca_eval import utils
    from alpaca_eval.completion_parsers import regex_parser
    from alpaca_eval.constants import EVALUATORS_CONFIG_DIR

    template_path = Path(EVALUATORS_CONFIG_DIR) / settings.prompt
    if not template_path.is_file():
        raise EvaluationError(
            f"evaluation.alpaca_eval.prompt: no such alpaca_eval template: {settings.prompt}"
        )
    template = template_path.read_text(encoding="utf-8")
    model_first = [
        settings.randomize_order and _shown_first_is_model(i, seed) for i in reference["instruction"]
    ]
    shown = pd.DataFrame(
        {
            "instruction": reference["instruction"],
            "output_1": [
                o if f else r for o, r, f in zip(outputs["output"], reference["output"], model_first)
            ],
            "output_2": [
                r if f else o for o, r, f in zip(outputs["output"], reference["output"], model_first)
            ],
        }
    )
    prompts, _ = utils.make_prompts(shown, template=template, batch_size=1)
    conversations = [utils.prompt_to_chatml(p) for p in prompts]

    def parse(text: str) -> int | None:
        found = regex_parser(text, dict(IDENTIFIERS)) if text.strip() else []
        return found[0] if found else None

    verdicts = judge.judge(conversations, parse, stats)
    preference = []
    for verdict, first_is_model in zip(verdicts, model_first):
        if verdict.value is None:
            preference.append(float("nan"))
        else:  # back to alpaca_eval's encoding: 2 = the model (output_2) wins
            model_won = (verdict.value == 1) == first_is_model
            preference.append(2.0 if model_won else 1.0)
    picked_first = [v.value == 1 for v in verdicts if v.value is not None]
    stats.extra["first_shown_preferred"] = sum(picked_first) / len(picked_first) if picked_first else None
    return pd.DataFrame(
        {
            "instruction": reference["instruction"],
            "output_1": reference["output"],
            "generator_1": reference["generator"],
            "output_2": outputs["output"],
            "generator_2": outputs["generator"],
            "dataset": reference["dataset"],
            "annotator": f"tapir:{judge.model_id}:{settings.prompt}",
            "preference": preference,
            "raw_completion": [v.text for v in verdicts],
            "judge_attempts": [v.attempts for v in verdicts],
            "model_shown_first": model_first,
        }
    )


def annotate_with_alpaca_eval(reference: pd.DataFrame, outputs: pd.DataFrame, config: str) -> pd.DataFrame:
    """alpaca_eval's own annotator and clients (OpenAI-compatible, Anthropic, ...): online only."""
    from alpaca_eval.annotators import PairwiseAnnotator

    annotator = PairwiseAnnotator(annotators_config=config, caching_path=None)
    records = annotator.annotate_head2head(
        outputs_1=reference.to_dict("records"), outputs_2=outputs.to_dict("records")
    )
    return pd.DataFrame(records)


def length_stats(annotations: pd.DataFrame) -> dict[str, Any]:
    decided = annotations[annotations["preference"].isin([1.0, 2.0])]
    model_longer = decided["output_2"].str.len() > decided["output_1"].str.len()
    longer_won = (model_longer & (decided["preference"] == 2.0)) | (
        ~model_longer & (decided["preference"] == 1.0)
    )
    return {
        "longer_output_preferred": float(longer_won.mean()) if len(decided) else None,
        "model_avg_length": int(annotations["output_2"].str.len().mean()),
        "reference_avg_length": int(annotations["output_1"].str.len().mean()),
    }


def score_outputs(
    name: str,
    outputs: pd.DataFrame,
    judge: JudgeClient | None,
    settings: AlpacaEvalSettings,
    reference: pd.DataFrame,
    out_dir: Path,
    seed: int,
    cache_dir: str | Path,
) -> dict[str, Any]:
    """Judge and score one model's answers; write alpaca_eval's files and ``metrics.json``."""
    stats = JudgeStats()
    if settings.annotator == "judge":
        if judge is None:
            raise EvaluationError("evaluation.alpaca_eval.annotator: 'judge' needs a judge model")
        annotations = judge_pairs(reference, outputs, judge, settings, seed, stats)
    else:
        annotations = annotate_with_alpaca_eval(reference, outputs, settings.annotator.split(":", 1)[1])
        stats.judgments = len(annotations)
        stats.parse_failures = int(annotations["preference"].isna().sum())
    if annotations["preference"].notna().sum() == 0:
        raise EvaluationError(
            f"judge: none of the {len(annotations)} AlpacaEval verdicts for {name} could be parsed "
            f"({stats.last_error or 'see raw_completion in the annotations'})"
        )
    difficulty = difficulty_source(settings)
    metrics = alpaca_metrics.score(
        annotations,
        difficulty,
        cache_dir,
        positions=reference["position"].tolist(),
        native_log=out_dir / "length_controlled_fit.log",
    )
    metrics["avg_length"] = int(outputs["output"].str.len().mean())
    metrics["answers"] = answer_stats(
        [
            GeneratedText(text, _known(tokens), _known(ended))
            for text, tokens, ended in zip(
                outputs["output"],
                outputs.get("output_tokens", [None] * len(outputs)),
                outputs.get("ended", [None] * len(outputs)),
            )
        ]
    )
    health = {**stats.health(), **length_stats(annotations)}
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.to_json(out_dir / "model_outputs.json", orient="records", indent=1, force_ascii=False)
    annotations.to_json(out_dir / "annotations.json", orient="records", indent=1, force_ascii=False)
    result = {"metrics": metrics, "judge_health": health}
    write_json(out_dir / "metrics.json", result)
    return result


def _known(value: Any) -> Any:
    """A pandas cell as a plain value; a missing one (None, NaN) as None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value
