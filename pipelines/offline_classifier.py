"""A task classifier that works offline: logistic regression on sentence features of labelled rows.

The embedded judge (Gemma 3 270M base) cannot label tasks: on the embedded default it called
39 of 48 rows "Art" and never used Math, Reasoning or Code, so re-balancing spread the missing
labels' shares over wrong ones. tapir ships 237 instructions labelled with EasyDistill's 32 tasks;
a linear model on the embedded model's mean-pooled embeddings of them labels held-out rows far
better than the same model prompted (BENCHMARKS.md). The embedder is the embedded GGUF loaded
in process with llama.cpp's embedding mode: the served engine generates and cannot embed.

The fitted model and its cross-validated accuracy are cached under ``<cache_dir>/classifier``
by the hash of the rows and settings, so a re-run neither re-embeds nor re-fits.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tapir.errors import DataError
from tapir.native_output import native_output_to
from tapir.recipe import OfflineClassifierSettings
from tapir.staging import atomic_file

EMBEDDED_LABEL_COLUMN = "reference_task"  # the label column of tapir's embedded pool


@dataclass
class FittedClassifier:
    """A fitted classifier with what the run summary reports of it."""

    features: str
    model: Any
    labels: list[str]
    rows: int
    folds: int
    held_out_accuracy: float
    per_label_recall: dict[str, float] = field(default_factory=dict)
    rows_sha256: str = ""

    def report(self) -> dict[str, Any]:
        return {
            "kind": "offline",
            "features": self.features,
            "training_rows": self.rows,
            "labels_seen": len(self.labels),
            "folds": self.folds,
            "held_out_accuracy": round(self.held_out_accuracy, 3),
        }


def labelled_rows(settings: OfflineClassifierSettings, taxonomy: list[str]) -> list[tuple[str, str]]:
    """(text, label) pairs from ``taxonomy.offline.rows``; a label outside the taxonomy is an error."""
    from tapir.pipelines.seeds import embedded_seed_path, read_local

    field_name = "taxonomy.offline.rows"
    if settings.rows == "embedded":
        path, column = embedded_seed_path(), EMBEDDED_LABEL_COLUMN
    else:
        path, column = Path(settings.rows).expanduser(), settings.label_column
        if not path.is_file():
            raise DataError(f"{field_name}: no such file: {path}")
    raw = read_local(path, str(path), field=field_name)
    pairs: list[tuple[str, str]] = []
    for number, row in enumerate(raw):
        instruction = str(row.get("instruction") or "").strip()
        label = row.get(column)
        if not instruction:
            raise DataError(f"{field_name}: row {number} of {path} has no instruction")
        if not label:
            raise DataError(f"{field_name}: row {number} of {path} has no {column!r} label")
        pairs.append((text_of(instruction, row.get("input")), str(label)))
    unknown = sorted({label for _, label in pairs} - set(taxonomy))
    if unknown:
        raise DataError(f"{field_name}: labels not in taxonomy.labels: {unknown}")
    if len({label for _, label in pairs}) < 2:
        raise DataError(f"{field_name}: needs rows of at least two labels")
    return pairs


def text_of(instruction: str, input_text: Any = None) -> str:
    """What the classifier reads of a row: the instruction, then its input."""
    extra = str(input_text or "").strip()
    return f"{instruction}\n{extra}" if extra else instruction


class Featurizer:
    """Texts to feature vectors: embedded-model embeddings or TF-IDF n-grams."""

    def __init__(self, kind: str, cache_dir: Path, threads: int = 2) -> None:
        self.kind, self.cache_dir, self.threads = kind, cache_dir, threads
        self._llama: Any = None

    def pipeline(self) -> Any:
        """The sklearn estimator for these features (TF-IDF learns its vocabulary in the fit)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union
        from sklearn.preprocessing import StandardScaler

        if self.kind == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            union = make_union(
                TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
            )
            return make_pipeline(union, LogisticRegression(C=10, max_iter=3000))
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))

    def transform(self, texts: list[str]) -> Any:
        if self.kind == "tfidf":
            return list(texts)
        if self._llama is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            from tapir.serving.embedded import embedded_gguf_path

            with native_output_to(None):  # llama.cpp's load notes would land in the run's console
                self._llama = Llama(
                    model_path=str(embedded_gguf_path(self.cache_dir)),
                    embedding=True,
                    pooling_type=LLAMA_POOLING_TYPE_MEAN,
                    n_ctx=512,
                    n_threads=self.threads,
                    verbose=False,
                )
        vectors = [self._llama.embed(text[:1500]) for text in texts]
        matrix = np.asarray(vectors, dtype=np.float32)
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-8)


def fit(
    settings: OfflineClassifierSettings, taxonomy: list[str], cache_dir: Path, seed: int = 0
) -> tuple[FittedClassifier, Featurizer]:
    """The fitted classifier (from the cache when these rows and settings were fitted before)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    pairs = labelled_rows(settings, taxonomy)
    payload = json.dumps([pairs, settings.features, settings.folds, seed], ensure_ascii=False)
    digest = hashlib.sha256(payload.encode()).hexdigest()
    featurizer = Featurizer(settings.features, cache_dir)
    stored = cache_dir / "classifier" / f"{digest[:24]}.pkl"
    if stored.is_file():
        with stored.open("rb") as handle:
            return pickle.load(handle), featurizer
    texts, labels = [t for t, _ in pairs], [label for _, label in pairs]
    features = featurizer.transform(texts)
    smallest = min(labels.count(label) for label in set(labels))
    folds = max(2, min(settings.folds, smallest))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(featurizer.pipeline(), features, labels, cv=splitter)
    accuracy = float(np.mean([p == t for p, t in zip(predicted, labels)]))
    recall = {
        label: float(np.mean([p == label for p, t in zip(predicted, labels) if t == label]))
        for label in sorted(set(labels))
    }
    model = featurizer.pipeline().fit(features, labels)
    fitted = FittedClassifier(
        settings.features, model, sorted(set(labels)), len(pairs), folds, accuracy, recall, digest
    )
    stored.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(stored) as partial:
        partial.write_bytes(pickle.dumps(fitted))
    return fitted, featurizer


def predict(fitted: FittedClassifier, featurizer: Featurizer, texts: list[str]) -> list[tuple[str, float]]:
    """(label, probability) per text."""
    if not texts:
        return []
    probabilities = fitted.model.predict_proba(featurizer.transform(texts))
    classes = list(fitted.model.classes_)
    best = probabilities.argmax(axis=1)
    return [(str(classes[i]), float(row[i])) for i, row in zip(best, probabilities)]
