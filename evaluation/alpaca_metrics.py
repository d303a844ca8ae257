"""AlpacaEval 2.0 scores from pairwise annotations, with alpaca_eval's own metrics code.

The win rate and its standard error need nothing but the annotations. The length-controlled
win rate fits alpaca_eval's GLM, which needs a per-instruction difficulty that alpaca_eval
downloads from the Hub (``df_gamed.csv``: difficulty plus the annotations of two gamed
baselines it regularises towards). Three ways to supply it:

* alpaca_eval's ``df_gamed.csv`` as a local file: the exact published GLM
  (``length_controlled_v1``) -- the result equals alpaca_eval's own;
* alpaca_eval's ``instruction_difficulty.csv``: the same GLM without the gamed-baseline
  regularisation (``length_controlled_noreg``), since those annotations are not in that file;
* a folder of annotation files (any judge, many models): the difficulty is estimated with a
  joint logistic model -- one intercept and one length slope per model, one term per
  instruction -- the per-instruction term being the difficulty (alpaca_eval's notebook fits the
  same kind of model; its authors note the metric's properties hold however the term is got).

With no source, alpaca_eval downloads the official file (needs the internet).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapir.errors import DataError
from tapir.json_text import DuplicateKeyError, read_text, strict_json
from tapir.native_output import native_output_to

REQUIRED_COLUMNS = ("instruction", "output_1", "output_2", "generator_1", "generator_2", "preference")
SCORE_KEYS = ("win_rate", "standard_error", "length_controlled_winrate", "n_total")
#: The joint model is fitted almost unregularised, like alpaca_eval's own GLM (C=100).
ESTIMATE_C = 100.0
#: alpaca_eval's length_controlled GLMs cross-validate with n_splits=5 (GLM_INFO kwargs).
GLM_FOLDS = 5


def load_annotations(path: str | Path) -> pd.DataFrame:
    """Annotations as alpaca_eval writes them (``annotations.json``), checked."""
    path = Path(path)
    if not path.exists() or path.is_dir():  # a file, or a pipe: read once
        raise DataError(f"--annotations: file not found: {path}")
    text = read_text(path, "--annotations", path)
    try:
        records = strict_json(text)
    except DuplicateKeyError as exc:
        raise DataError(f"--annotations: {path}: {exc}") from None
    except ValueError as exc:
        raise DataError(f"--annotations: {path} is not an alpaca_eval annotations JSON ({exc})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"--annotations: {path} is not an alpaca_eval annotations JSON (a list of records)")
    return check_annotations(pd.DataFrame.from_records(records), str(path))


def check_annotations(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"annotations: {origin} lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"annotations: {origin} has no rows")
    if df["generator_2"].nunique() != 1 or df["generator_1"].nunique() != 1:
        raise DataError(f"annotations: {origin} mixes several models; score one model per file")
    for column in ("output_1", "output_2"):
        bad = [n for n, value in enumerate(df[column]) if not isinstance(value, str)]
        if bad:
            value = df[column].iloc[bad[0]]
            shown = "null" if _is_null(value) else f"a {type(value).__name__}"
            raise DataError(
                f"annotations: {origin} row {bad[0]}: {column} is {shown}, not the text of an answer "
                f"({len(bad)} row(s) so); the length-controlled rate needs every answer"
            )
    df = df.copy()
    df["preference"] = _checked_preferences(df["preference"], origin)
    return df


def _checked_preferences(raw: pd.Series, origin: str) -> pd.Series:
    """alpaca_eval's preferences as numbers: 1 (reference wins) to 2 (model wins), 0 for a draw,
    null for "not judged" (kept, counted, left out of the rate). Anything else is refused: a win
    rate computed from it would look valid and be wrong."""
    numeric = pd.to_numeric(raw.where(raw.map(lambda v: not isinstance(v, bool))), errors="coerce")
    for position, (given, value) in enumerate(zip(raw, numeric)):
        if pd.isna(value) and not _is_null(given):
            raise DataError(f"annotations: {origin} row {position}: preference {given!r} is not a number")
        if not pd.isna(value) and not (value == 0 or 1 <= value <= 2):
            raise DataError(
                f"annotations: {origin} row {position}: preference {given!r} is outside alpaca_eval's "
                "range (1 = reference wins .. 2 = model wins, 0 = draw)"
            )
    if numeric.isna().all():
        raise DataError(f"annotations: {origin}: none of its {len(numeric)} rows has a preference")
    return numeric


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- difficulty --------------------------------------------------------------------------------


def estimate_difficulty(annotation_files: list[Path]) -> pd.Series:
    """Per-instruction difficulty (indexed by instruction text) from many models' annotations."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    frames = []
    for number, path in enumerate(sorted(annotation_files)):
        df = check_annotations(pd.read_json(path), str(path))
        delta = df["output_1"].str.len() - df["output_2"].str.len()
        frames.append(
            pd.DataFrame(
                {
                    "model": number,
                    "instruction": df["instruction"],
                    "tanh_len": np.tanh(delta / delta.std()),
                    # alpaca_eval's encoding: 1 = reference wins, 2 = model wins, 0 = draw
                    "p": df["preference"].replace({0.0: 1.5}) - 1,
                }
            )
        )
    if len(frames) < 2:
        raise DataError("difficulty: estimating needs the annotations of at least two models")
    data = pd.concat(frames, ignore_index=True).dropna(subset=["p"])
    instructions = pd.Index(sorted(data["instruction"].unique()))
    rows = np.arange(len(data))
    models = len(frames)
    design = sparse.hstack(
        [
            sparse.csr_matrix((np.ones(len(data)), (rows, data["model"])), shape=(len(data), models)),
            sparse.csr_matrix((data["tanh_len"], (rows, data["model"])), shape=(len(data), models)),
            sparse.csr_matrix(
                (np.ones(len(data)), (rows, instructions.get_indexer(data["instruction"]))),
                shape=(len(data), len(instructions)),
            ),
        ]
    ).tocsr()
    # Soft labels, as alpaca_eval fits them: each row once as "model wins" weighted by p and
    # once as "reference wins" weighted by 1 - p.
    fit = LogisticRegression(C=ESTIMATE_C, fit_intercept=False, max_iter=5000, tol=1e-8)
    fit.fit(
        sparse.vstack([design, design]),
        np.r_[np.ones(len(data)), np.zeros(len(data))],
        sample_weight=np.r_[data["p"], 1 - data["p"]],
    )
    difficulty = fit.coef_[0][2 * models :]
    return pd.Series(difficulty - difficulty.mean(), index=instructions, name="instruction_difficulty")


def _generator(path: Path) -> str | None:
    """The model an annotation file scores (its ``generator_2``), read from its first record."""
    stat = path.stat()
    return _generator_of(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _generator_of(path: str, mtime_ns: int, size: int) -> str | None:
    """Cached by the file's identity: scoring many models parses each annotation file once."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        return str(records[0]["generator_2"]) if records else None
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        return None


def estimated_difficulty(folder: Path, cache_dir: str | Path, leave_out: str | None = None) -> pd.Series:
    """``estimate_difficulty`` over a folder's ``*.json``, cached by the files' content.

    ``leave_out`` (a model name) drops that model's own annotations from the estimate: a model
    scored against a difficulty fitted on its own verdicts is scored in sample (leave-one-out
    keeps the estimate honest; with 15 models it moves LC by up to a few tenths)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"difficulty: no annotation *.json files in {folder}")
    if leave_out is not None:
        files = [f for f in files if _generator(f) != leave_out]
        if not files:
            raise DataError(
                f"difficulty: {folder} holds only {leave_out}'s own annotations; "
                "the estimate needs other models'"
            )
    digest = hashlib.sha256()
    for path in files:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    cached = Path(cache_dir) / "alpaca_eval" / f"difficulty-{digest.hexdigest()[:16]}.csv"
    if cached.is_file():
        return pd.read_csv(cached, index_col=0).squeeze("columns")
    difficulty = estimate_difficulty(files)
    cached.parent.mkdir(parents=True, exist_ok=True)
    difficulty.to_csv(cached)
    return difficulty


# --- scoring -------------------------------------------------------------------------------------


def score(
    annotations: pd.DataFrame,
    difficulty: str | Path | None = None,
    cache_dir: str | Path = ".cache/tapir",
    positions: list[int] | None = None,
    native_log: Path | None = None,
) -> dict[str, Any]:
    """alpaca_eval's metrics for one model's annotations (percentages, as alpaca_eval reports);
    what its native solver prints goes to ``native_log`` (None: discarded).

    alpaca_eval's official difficulty files are indexed by position in the 805-instruction set
    and looked up by row position; ``positions`` (each row's position there) keeps a sample's rows
    on their own instructions' difficulty. Without it rows are taken to be in the set's order.
    """
    from alpaca_eval.metrics import get_length_controlled_winrate, get_winrate

    annotations = check_annotations(annotations, "annotations")
    judged = int(annotations["preference"].notna().sum())
    if judged < GLM_FOLDS:
        metrics = {k: _plain(v) for k, v in get_winrate(annotations).items()}
        metrics["length_controlled_winrate"] = None
        metrics["lc_method"] = (
            f"not computed: alpaca_eval's GLM is fitted with {GLM_FOLDS}-fold cross-validation "
            f"and needs at least {GLM_FOLDS} judged instructions ({judged} here)"
        )
        return metrics
    source = Path(difficulty).expanduser() if difficulty is not None else None
    if source is not None and not source.exists():
        raise DataError(f"difficulty: file not found: {difficulty}")
    glm_name, df_gamed = "length_controlled_v1", None
    method = "official df_gamed (alpaca_eval download)"
    if source is not None and source.is_dir():
        scored_model = _scored_model(annotations)
        glm_name, method = "length_controlled_noreg", f"estimated from {source}, leaving out {scored_model}"
        difficulty_estimate = estimated_difficulty(source, cache_dir, leave_out=scored_model)
        df_gamed = _aligned_difficulty(annotations, difficulty_estimate, str(source))
    elif source is not None:
        try:
            table = pd.read_csv(source)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DataError(
                f"difficulty: {source} is not a CSV table ({str(exc).splitlines()[0][:120]})"
            ) from None
        if {"model", "not_gamed_baseline", "instruction_difficulty"} <= set(table.columns):
            method = f"official df_gamed {source}"
            df_gamed = _sample_first(source, positions)
        elif "instruction_difficulty" in table.columns:
            glm_name, method = "length_controlled_noreg", f"instruction difficulty {source}"
            by_position = pd.read_csv(source, index_col=0)["instruction_difficulty"]
            rows = positions if positions is not None else range(len(annotations))
            df_gamed = _frame_for_glm(by_position.reindex(rows).to_numpy(), str(source))
        else:
            raise DataError(
                f"difficulty: {source} has no instruction_difficulty column "
                "(give alpaca_eval's instruction_difficulty.csv or df_gamed.csv, or a folder of annotations)"
            )
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if source is None and positions is not None and list(positions) != list(range(len(annotations))):
        try:
            df_gamed = _sample_first(Path(_download_df_gamed()), positions)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise DataError(_DOWNLOAD_FAILED.format(type(exc).__name__)) from None
    # liblinear (alpaca_eval's GLM) prints "class label 1 specified in weight is not found" from
    # C for a fold holding one class: into the scoring's log, not the console.
    with _local_df_gamed(df_gamed), warnings.catch_warnings(), native_output_to(native_log):
        warnings.simplefilter("ignore", FutureWarning)  # sklearn's notes on alpaca_eval's arguments
        try:
            metrics = get_length_controlled_winrate(
                annotations,
                glm_name=glm_name,
                save_weights_dir=None,  # alpaca_eval's default writes into its own package folder
                is_warn_extreme_changes=False,
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise DataError(_DOWNLOAD_FAILED.format(type(exc).__name__)) from None
    metrics = {k: _plain(v) for k, v in metrics.items()}
    metrics["lc_method"] = method
    # alpaca_eval's own test for a GLM that moved the win rate implausibly far (it only logs it).
    from alpaca_eval.metrics.glm_winrate import get_is_extreme_changes

    metrics["lc_extreme_change"] = bool(
        get_is_extreme_changes(metrics["win_rate"], metrics["length_controlled_winrate"])
    )
    return metrics


def _scored_model(annotations: pd.DataFrame) -> str | None:
    names = annotations["generator_2"].dropna().unique() if "generator_2" in annotations else []
    return str(names[0]) if len(names) == 1 else None


_DOWNLOAD_FAILED = (
    "difficulty: the LC win rate needs alpaca_eval's instruction difficulty and it cannot be "
    "downloaded ({}); give a local df_gamed.csv / instruction_difficulty.csv "
    "or a folder of annotation JSONs to estimate it from"
)


def _download_df_gamed() -> str:
    """The file alpaca_eval's GLM downloads, fetched the way it does."""
    from alpaca_eval import constants
    from huggingface_hub import hf_hub_download

    return hf_hub_download(
        repo_id="tatsu-lab/alpaca_eval",
        filename="df_gamed.csv",
        repo_type="dataset",
        token=constants.DATASETS_TOKEN,
        cache_dir=constants.DEFAULT_CACHE_DIR,
    )


def _sample_first(df_gamed: Path, positions: list[int] | None) -> Path:
    """A copy of df_gamed whose difficulty lookup (the g-th first-seen ``index``) gives row g of a
    sample its own instruction's value: the first model's rows for the sample's positions move to
    the front. The rows themselves are unchanged, so the full set in order is the file as is."""
    if positions is None or list(positions) == list(range(len(positions))):
        return df_gamed
    table = pd.read_csv(df_gamed)
    first = table[table["model"] == table["model"].iloc[0]]
    if first["index"].duplicated().any() or not set(positions) <= set(first["index"]):
        raise DataError(f"difficulty: {df_gamed} does not cover the sampled instructions once each")
    wanted = list(positions)
    order = wanted + [i for i in first["index"] if i not in set(wanted)]
    moved = first.set_index("index", drop=False).loc[order]
    return _temporary_df_gamed(
        pd.concat([moved, table[table["model"] != table["model"].iloc[0]]], ignore_index=True)
    )


def _aligned_difficulty(annotations: pd.DataFrame, difficulty: pd.Series, origin: str) -> Path:
    """alpaca_eval looks difficulty up by row position; give each row its instruction's value."""
    values = annotations["instruction"].map(difficulty)
    if values.isna().any():
        raise DataError(
            f"difficulty: {int(values.isna().sum())} annotated instruction(s) are not in the "
            f"annotations of {origin}, so their difficulty is unknown"
        )
    return _frame_for_glm(values.to_numpy(), origin)


def _frame_for_glm(values: np.ndarray, origin: str) -> Path:
    if np.isnan(values).any():
        raise DataError(f"difficulty: {origin} has no value for {int(np.isnan(values).sum())} row(s)")
    return _temporary_df_gamed(
        pd.DataFrame({"model": "difficulty", "index": range(len(values)), "instruction_difficulty": values})
    )


def _temporary_df_gamed(frame: pd.DataFrame) -> Path:
    """A df_gamed.csv for ``_local_df_gamed`` to hand to alpaca_eval's GLM."""
    path = Path(tempfile.mkdtemp(prefix="tapir-difficulty-")) / "df_gamed.csv"
    frame.to_csv(path, index=False)
    return path


@contextmanager
def _local_df_gamed(path: Path | None) -> Iterator[None]:
    """alpaca_eval's GLM always fetches df_gamed.csv with hf_hub_download and has no parameter
    for a local file: only that call is redirected, the fit itself is alpaca_eval's."""
    if path is None:
        yield
        return
    import alpaca_eval.metrics.glm_winrate as glm

    original = glm.hf_hub_download
    glm.hf_hub_download = lambda **kwargs: str(path)
    try:
        yield
    finally:
        glm.hf_hub_download = original


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
