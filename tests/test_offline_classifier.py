"""The offline task classifier: fitted on labelled rows, its accuracy measured on held-out folds
(never on the rows it learned), cached, and bad label files refused with the field named."""

from __future__ import annotations

import json

import pytest

from tapir.errors import DataError
from tapir.pipelines.offline_classifier import fit, labelled_rows, predict
from tapir.pipelines.steps import PLACEHOLDER, OfflineTaskClassifier
from tapir.recipe import EASYDISTILL_TAXONOMY, OfflineClassifierSettings


def test_tfidf_classifier_reports_held_out_accuracy_and_is_cached(tmp_path):
    settings = OfflineClassifierSettings(features="tfidf", folds=5)
    fitted, featurizer = fit(settings, EASYDISTILL_TAXONOMY, tmp_path)
    report = fitted.report()
    assert report["training_rows"] == 237 and report["labels_seen"] == 32 and report["folds"] == 5
    # held out: well above chance (1/32) and below what the model scores on its own training rows
    pairs = labelled_rows(settings, EASYDISTILL_TAXONOMY)
    in_sample = sum(
        label == truth
        for (label, _), (_, truth) in zip(predict(fitted, featurizer, [t for t, _ in pairs]), pairs)
    ) / len(pairs)
    assert 0.15 < fitted.held_out_accuracy < in_sample
    assert set(fitted.per_label_recall) == set(EASYDISTILL_TAXONOMY)
    (stored,) = (tmp_path / "classifier").glob("*.pkl")
    again, _ = fit(settings, EASYDISTILL_TAXONOMY, tmp_path)
    assert again.held_out_accuracy == fitted.held_out_accuracy and again.rows_sha256 == fitted.rows_sha256
    assert list((tmp_path / "classifier").glob("*.pkl")) == [stored]


def _rows_file(tmp_path, rows):
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        (
            [{"instruction": "Add 2 and 3.", "task": "Math"}, {"instruction": "Sing.", "task": "Karaoke"}],
            "labels not in taxonomy.labels: ['Karaoke']",
        ),
        ([{"instruction": "Add 2 and 3.", "task": "Math"}, {"instruction": "", "task": "Art"}], "row 1 of"),
        ([{"instruction": "Add 2 and 3.", "label": "Math"}], "has no 'task' label"),
        ([{"instruction": "Add 2 and 3.", "task": "Math"}], "at least two labels"),
    ],
)
def test_bad_label_files_name_the_field(tmp_path, rows, fragment):
    settings = OfflineClassifierSettings(rows=_rows_file(tmp_path, rows), features="tfidf")
    with pytest.raises(DataError) as error:
        fit(settings, EASYDISTILL_TAXONOMY, tmp_path)
    assert str(error.value).startswith("taxonomy.offline.rows:") and fragment in str(error.value)


def test_the_step_labels_rows_and_lets_placeholders_through(tmp_path):
    rows = [
        {"instruction": f"Compute {a} + {b} and show the steps.", "task": "Math"} for a, b in [(1, 2), (3, 4)]
    ] + [{"instruction": f"Write a poem about the {w}.", "task": "Writing"} for w in ("sea", "moon")]
    step = OfflineTaskClassifier(
        name="classify",
        settings=OfflineClassifierSettings(
            rows=_rows_file(tmp_path, rows), features="tfidf", folds=2
        ).model_dump(),
        taxonomy=EASYDISTILL_TAXONOMY,
        cache_dir=str(tmp_path),
    )
    step.load()
    placeholder = {"id": "p", "instruction": "", PLACEHOLDER: True}
    (out,) = list(step.process([{"instruction": "Compute 7 + 9 and show the steps."}, placeholder]))
    assert out[0]["task"] == "Math" and out[0]["task_error"] is None and 0.5 < out[0]["task_confidence"] <= 1
    assert out[0]["classifier_model"] == "offline tfidf classifier (4 labelled rows)"
    assert out[1]["task"] is None and out[1][PLACEHOLDER]


@pytest.mark.slow
def test_embedded_features_beat_tfidf_on_held_out_rows(tmp_path):
    from pathlib import Path

    cache = Path(__file__).resolve().parents[1] / ".cache" / "tapir"
    embedded, _ = fit(OfflineClassifierSettings(features="embedded"), EASYDISTILL_TAXONOMY, cache)
    tfidf, _ = fit(OfflineClassifierSettings(features="tfidf"), EASYDISTILL_TAXONOMY, tmp_path)
    assert embedded.held_out_accuracy >= 0.55  # measured 0.67 (BENCHMARKS.md); chance is 1/32
    assert embedded.held_out_accuracy > tfidf.held_out_accuracy + 0.15


@pytest.mark.integration
def test_a_data_run_labels_with_the_offline_classifier_and_reports_it(tmp_path, scripted):
    """Through distilabel's graph (its workers rebuild the step from its settings): every row
    gets a taxonomy label with no LLM call, and the summary and card say how accurate it is."""
    from rich.console import Console

    from tapir.pipelines.run import run_data
    from tapir.recipe import recipe_from_dict

    from .conftest import LABELS, seed_file, tiny_recipe_dict

    rows = [
        {"instruction": f"Solve math problem number {i} and show the steps.", "task": "Math"}
        for i in range(4)
    ]
    rows += [{"instruction": f"Write a short poem about the colour {c}.", "task": "Writing"} for c in "ABCD"]
    rows_file = _rows_file(tmp_path, rows)
    recipe = recipe_from_dict(
        tiny_recipe_dict(
            tmp_path,
            seeds={"source": seed_file(tmp_path), "limit": None},
            difficulty={"delta": 1.0},
            taxonomy={
                "labels": LABELS,
                "target_mix": {"Math": 0.5, "Writing": 0.25, "Code Generation": 0.15, "Others": 0.1},
                "classifier": "offline",
                "offline": {"rows": rows_file, "features": "tfidf", "folds": 2},
            },
        )
    )
    out = run_data(recipe, Console(quiet=True))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classifier"]["kind"] == "offline" and summary["classifier"]["training_rows"] == 8
    assert summary["parse_failures"]["task label"] == 0
    assert not any(
        step.startswith("classify_task") for step in summary["usage"].get("judge", {}).get("steps", [])
    )
    import datasets

    pool = datasets.load_dataset("parquet", data_files=str(out / "data/pool.parquet"), split="train")
    assert {r["task"] for r in pool if r["difficulty"] != "excluded"} <= {"Math", "Writing"}
    assert all(r["classifier_model"].startswith("offline tfidf classifier") for r in pool if r["task"])
    assert "held-out accuracy" in (out / "README.md").read_text()
