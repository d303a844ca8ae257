"""Where benchmark files come from: a local path, an https URL, a file in a Hub dataset, or
``embedded``: the small samples tapir ships for the embedded default (``tapir/benchmark_samples``,
see its README for sources and licenses), so ``make eval`` runs with nothing beside the clone.

Offline runs point the recipe at local copies; online runs fetch once into the cache folder.
Nothing here guesses: a source that cannot be read is an error naming the recipe field.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from tapir.errors import DataError

HF_PREFIX = "hf://datasets/"
EMBEDDED = "embedded"
#: The sample each field's ``embedded`` names (relative to ``tapir/benchmark_samples``).
SAMPLES = {
    "evaluation.alpaca_eval.reference": "alpaca_eval/reference_outputs.json",
    "evaluation.alpaca_eval.difficulty": "alpaca_eval/instruction_difficulty.csv",
    "evaluation.mt_bench.questions": "mt_bench/question.jsonl",
    "evaluation.mt_bench.judge_prompts": "mt_bench/judge_prompts.jsonl",
    "evaluation.mt_bench.reference_answers": "mt_bench/reference_answer/gpt-4.jsonl",
    # every AlpacaEval 2.0 instruction and MT-Bench question, to keep out of training data
    "decontamination.alpaca_eval": "alpaca_eval/instructions.json",
    "decontamination.mt_bench": "mt_bench/question.jsonl",
}


def sample_file(field: str) -> Path:
    """The packaged sample for ``field`` (``embedded`` in a recipe)."""
    if field not in SAMPLES:
        raise DataError(f"{field}: tapir ships no embedded sample for this field")
    return Path(str(files("tapir").joinpath("benchmark_samples", SAMPLES[field])))


def resolve(source: str, field: str, cache_dir: str | Path) -> Path:
    """A local file for ``source`` (downloaded into ``<cache_dir>/benchmarks`` when remote)."""
    if source == EMBEDDED:
        return sample_file(field)
    if source.startswith(HF_PREFIX):
        from huggingface_hub import hf_hub_download

        owner, name, *rest = source[len(HF_PREFIX) :].split("/")
        if not rest:
            raise DataError(f"{field}: expected hf://datasets/<owner>/<name>/<file>, got {source}")
        try:
            return Path(
                hf_hub_download(repo_id=f"{owner}/{name}", filename="/".join(rest), repo_type="dataset")
            )
        except Exception as exc:  # offline, gated, missing: all end the same way for the user
            raise DataError(f"{field}: cannot download {source} ({type(exc).__name__})") from None
    if source.startswith(("https://", "http://")):
        target = Path(cache_dir) / "benchmarks" / hashlib.sha256(source.encode()).hexdigest()[:16]
        target = target / source.rsplit("/", 1)[-1]
        if not target.is_file():
            import httpx

            try:
                response = httpx.get(source, timeout=30, follow_redirects=True)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise DataError(f"{field}: cannot download {source} ({type(exc).__name__})") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(response.content)
        return target
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{field}: file not found: {source}")
    return path


def read_records(path: Path, field: str) -> list[dict[str, Any]]:
    """Rows of a JSON list or JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{field}: {path} is not UTF-8 text (byte {exc.start})") from None
    except IsADirectoryError:
        raise DataError(f"{field}: {path} is a folder, not a file") from None
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{field}: {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, list):
        raise DataError(f"{field}: {path} must hold a list of records")
    return data
