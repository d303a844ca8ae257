"""The stage contract: what each stage leaves for the next, and how the next one reads it.

``tapir data`` writes a folder of curriculum splits plus a data manifest; ``tapir train`` reads
that manifest (is the run complete? was it made with the settings the recipe has now?) and
writes one folder and manifest per round; ``tapir eval`` learns the checkpoints from those
manifests; ``tapir review`` and ``tapir push`` read a data run's splits and manifest. Every
name and path those hand-offs share lives here, the manifests are typed (pydantic, with a
schema version), and every manifest is written atomically through :mod:`tapir.staging`, so a
stage never reads a half-written file and never has to know another stage's code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tapir.errors import DataError
from tapir.manifest import library_versions, now_utc, sha256_file, write_json
from tapir.recipe import Recipe

#: Bumped when a manifest field changes meaning; a reader refuses a newer schema than its own.
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

# --- split names ------------------------------------------------------------------------------

#: The round before round 1, trained on the easiest rows.
WARMUP = "warmup"
#: The data run's other tables: the selection before the curriculum split, the whole scored pool
#: and the teacher's expansions.
SELECTED, POOL, EXPANSIONS = "selected", "pool", "expansions"


def round_split(number: int) -> str:
    return f"round_{number}"


def curriculum_splits(rounds: int) -> list[str]:
    """Every split a data run writes for a ``rounds``-round curriculum, in training order."""
    return [WARMUP, *(round_split(r) for r in range(1, rounds + 1))]


def split_for(round_: int | str) -> str:
    """The split a ``--round`` value names: ``warmup`` or a round number."""
    return WARMUP if str(round_) == WARMUP else round_split(int(round_))


def is_curriculum_split(name: str) -> bool:
    return name == WARMUP or (name.startswith("round_") and name.removeprefix("round_").isdigit())


def curve_position(split: str) -> int | None:
    """Where a split's checkpoint sits on the round curve: the base student 0, warm-up 1,
    round r at r + 1 (None for a name that is not a curriculum split)."""
    if split == WARMUP:
        return 1
    return int(split.removeprefix("round_")) + 1 if is_curriculum_split(split) else None


def split_order(split: str) -> tuple[int, str]:
    """Sort key putting splits in training order: warmup, round_1, round_2, …, round_10 (not
    round_10 before round_2), anything else after, by name."""
    position = curve_position(split)
    return (position if position is not None else 1 << 30, split)


# --- folder layouts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DataRun:
    """A ``tapir data`` output folder."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def split_file(self, split: str) -> Path:
        return self.data_dir / f"{split}.parquet"

    @staticmethod
    def relative(split: str) -> str:
        """A split's file relative to the run folder (as the dataset card and the Hub see it)."""
        return f"data/{split}.parquet"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def card_file(self) -> Path:
        return self.root / "README.md"


@dataclass(frozen=True)
class TrainRun:
    """A ``tapir train`` output folder: one sub-folder per round."""

    root: Path

    def round_dir(self, split: str) -> Path:
        return self.root / split

    def model_dir(self, split: str) -> Path:
        """The round's final model (the next round starts from it)."""
        return self.round_dir(split) / MODEL_DIR

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.yaml"


MODEL_DIR = "model"
#: In a trained model's folder: the round and run key it was trained as, so a response or
#: generation cache can tell two trainings saved at the same path apart.
CHECKPOINT_ID = "tapir_checkpoint.json"


def model_key(path: str) -> str:
    """What identifies a model across stages (evaluation keys its answers by it, a pushed model
    card finds its leaderboard rows by it): a tapir checkpoint's run key, else a digest of the
    folder's files, else the Hub id."""
    folder = Path(path).expanduser()
    marker = folder / CHECKPOINT_ID
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))["key"]
    if folder.is_dir():
        digest = hashlib.sha256()
        for file in sorted(folder.iterdir()):
            if file.is_file():
                stat = file.stat()
                digest.update(f"{file.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        config = folder / "config.json"
        if config.is_file():
            digest.update(config.read_bytes())
        return digest.hexdigest()
    return f"hub:{path}"


@dataclass(frozen=True)
class ReviewRun:
    """A review folder (``<output>-review``): one sub-folder per reviewed split."""

    root: Path
    SAMPLE = "sample.parquet"
    PUSHED = "push.json"
    ANSWERS = "answers.parquet"
    DECISIONS = "decisions.parquet"
    AGREEMENT = "agreement.json"
    #: What a pull leaves for the dataset card and the Hub upload, beside the decisions.
    REPORTS = ("agreement.json", "agreement.md", "agreement.png", "decisions.parquet")

    def split_dir(self, split: str) -> Path:
        return self.root / split

    def agreements(self) -> dict[str, dict[str, Any]]:
        """Every pulled agreement report, by split."""
        found: dict[str, dict[str, Any]] = {}
        if self.root.is_dir():
            for path in sorted(self.root.glob(f"*/{self.AGREEMENT}")):
                found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        return found


# --- manifests --------------------------------------------------------------------------------


class StageManifest(BaseModel):
    """What every manifest starts with: which stage, which recipe, when, with which libraries."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    stage: str
    created: str
    recipe_name: str
    recipe_path: str | None = None
    recipe_hash: str
    libraries: dict[str, str] = {}


class DataManifest(StageManifest):
    stage: Literal["data"] = "data"
    seed: int
    #: The recipe settings the data depends on, flattened (``curriculum.hard_share``: value):
    #: training compares them with its own recipe's to refuse stale data.
    data_settings: dict[str, Any]
    files: dict[str, dict[str, Any]] = {}
    #: LLM calls that failed for good: their rows are missing, so the data is not final.
    failed_calls: int = 0
    #: Every file the data pass read (the seed file, labelled rows, benchmark files, chat
    #: templates, pulled review decisions): ``field: {path, sha256}``. Training re-hashes them, as
    #: an edited seed file makes the data as stale as an edited recipe.
    inputs: dict[str, dict[str, Any]] = {}


class RoundManifest(StageManifest):
    stage: Literal["train"] = "train"
    round: str
    key: str
    data: dict[str, Any]
    parent: dict[str, Any]
    metrics: dict[str, Any] = {}


class EvalManifest(StageManifest):
    stage: Literal["eval"] = "eval"
    judge: str
    models: dict[str, dict[str, Any]]


def header(stage: str, recipe: Recipe, recipe_path: str | None) -> dict[str, Any]:
    """The common fields of a manifest ``stage`` is about to write."""
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "created": now_utc(),
        "recipe_name": recipe.name,
        "recipe_path": recipe_path,
        "recipe_hash": recipe.fingerprint(),
        "libraries": library_versions(),
    }


def write_manifest(folder: Path, manifest: StageManifest) -> Path:
    """``folder/manifest.json``, written atomically and scrubbed of credentials."""
    path = folder / MANIFEST
    write_json(path, manifest.model_dump(mode="json"))
    return path


def _read(folder: Path, kind: type[StageManifest], made_by: str) -> Any:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raw = None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a readable tapir manifest (damaged? rerun `{made_by}`)")
    version = raw.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"{path}: written by a newer tapir (manifest schema {version}); upgrade tapir")
    if version < SCHEMA_VERSION:
        raise DataError(f"{path}: written by an older tapir (manifest schema {version}); rerun `{made_by}`")
    try:
        return kind.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise DataError(f"{path}: {field}: {first['msg']} (rerun `{made_by}`)") from None


def read_data_manifest(folder: Path) -> DataManifest | None:
    """The data run's manifest (None when ``folder`` holds none); one error line if damaged."""
    return _read(folder, DataManifest, "tapir data")


def read_round_manifest(folder: Path) -> RoundManifest | None:
    """A trained round's manifest (None while the round is unfinished)."""
    return _read(folder, RoundManifest, "tapir train")


def data_run(folder: Path) -> DataManifest:
    """The manifest of the data run in ``folder``; one line when there is none."""
    manifest = read_data_manifest(folder)
    if manifest is None:
        raise DataError(f"output_dir: no finished data run in {folder} (run `make data` first)")
    return manifest


def finished_data_run(folder: Path, before: str) -> DataManifest:
    """The manifest of a complete data run in ``folder``, or one line saying why it cannot be
    used ``before`` (training, a review, publishing)."""
    manifest = data_run(folder)
    if manifest.failed_calls:
        raise DataError(
            f"output_dir: the data run in {folder} is incomplete ({manifest.failed_calls} LLM "
            f"call(s) failed for good); rerun `make data` to ask them again before {before}"
        )
    return manifest


# --- what the data depends on -------------------------------------------------------------------

#: Sections whose every setting changes what ``tapir data`` writes.
_DATA_SECTIONS = (
    "seeds",
    "judging",
    "difficulty",
    "taxonomy",
    "expansion",
    "rebalance",
    "refinement",
    "decontamination",
    "curriculum",
)
#: Of a model: what changes its answers (not where it is served or how patiently).
_MODEL_FIELDS = {"backend", "model", "chat_template", "seed", "generation"}
#: Of the review section: what changes how pulled decisions are applied.
_REVIEW_FIELDS = {"apply", "drop_rejected", "override_labels", "use_fixes"}


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
    else:
        into[prefix] = value


def data_settings(recipe: Recipe) -> dict[str, Any]:
    """The settings a data run depends on, flattened to dotted recipe fields."""
    tree: dict[str, Any] = {"seed": recipe.seed}
    for role in ("teacher", "student", "judge"):
        tree[role] = recipe.role(role).model_dump(mode="json", include=_MODEL_FIELDS)
    for section in _DATA_SECTIONS:
        tree[section] = getattr(recipe, section).model_dump(mode="json")
    tree["review"] = recipe.review.model_dump(mode="json", include=_REVIEW_FIELDS)
    flat: dict[str, Any] = {}
    _flatten("", tree, flat)
    return flat


def input_record(files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``field: {path, sha256}`` for the input files a data pass read (see ``DataManifest.inputs``)."""
    return {
        field: {"path": str(path), "sha256": sha256_file(path) if path.is_file() else None}
        for field, path in files.items()
    }


def review_decision_files(recipe: Recipe) -> list[Path]:
    """The pulled review decisions a data pass applies (none unless ``review.apply``)."""
    root = ReviewRun(recipe.resolved_review_dir).root
    if not recipe.review.apply or not root.is_dir():
        return []
    return sorted(root.glob(f"*/{ReviewRun.DECISIONS}"))


def changed_inputs(manifest: DataManifest, recipe: Recipe) -> list[str]:
    """``field: what changed`` for every input file that is not as the data pass read it (edited,
    removed), and for review decisions pulled since."""
    changes = []
    for field, entry in sorted(manifest.inputs.items()):
        path = Path(str(entry.get("path")))
        now = sha256_file(path) if path.is_file() else None
        if now != entry.get("sha256"):
            what = "was removed" if now is None else "changed"
            changes.append(f"{field}: {path} {what} since `tapir data` read it")
    read = {str(entry.get("path")) for entry in manifest.inputs.values()}
    changes += [
        f"review: decisions {path} pulled since `tapir data` ran"
        for path in review_decision_files(recipe)
        if str(path) not in read and manifest.inputs  # an older manifest without inputs: unknown
    ]
    return changes


def stale_reasons(manifest: DataManifest, recipe: Recipe) -> list[str]:
    """Why the data run in a folder does not match ``recipe`` now: its settings, then its files."""
    return changed_settings(manifest, recipe) + changed_inputs(manifest, recipe)


#: What an input field is, in a person's words (``train --dry-run``: "stale: seed file changed").
_INPUT_NOUNS = {
    "seeds.source": "seed file",
    "taxonomy.offline.rows": "labelled rows file",
    "decontamination": "benchmark file",
    "chat_template": "chat template",
    "review": "review decisions",
}


def stale_summary(reasons: list[str]) -> str:
    """A few words for a list of :func:`stale_reasons`: ``seed file changed, recipe settings changed``."""
    nouns = []
    for reason in reasons:
        field = reason.split(":", 1)[0]
        is_file = reason.endswith("read it") or reason.endswith("ran")
        noun = next((n for key, n in _INPUT_NOUNS.items() if key in field), "input file") if is_file else None
        nouns.append(noun or "recipe settings")
    return ", ".join(f"{noun} changed" for noun in dict.fromkeys(nouns))


def changed_settings(manifest: DataManifest, recipe: Recipe) -> list[str]:
    """``field: then → now`` for every data-side setting that differs between the run and ``recipe``."""
    now = data_settings(recipe)
    then = manifest.data_settings
    return [
        f"{key}: {json.dumps(then.get(key))} → {json.dumps(now.get(key))}"
        for key in sorted(set(now) | set(then))
        if then.get(key) != now.get(key)
    ]
