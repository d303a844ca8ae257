"""Review logic up to the network boundary: sampling, records, answers, decisions, agreement,
corrections, and the connection errors a user meets. No server needed."""

import json
from collections import Counter

import pandas as pd
import pytest
from rich.console import Console

from tapir.errors import EndpointError, RecipeError
from tapir.pipelines.steps import ApplyReview
from tapir.recipe import recipe_from_dict
from tapir.review.answers import agreement, answers_from_records, decide
from tapir.review.argilla_client import connect, resolve
from tapir.review.corrections import load_corrections
from tapir.review.records import build_record, check_rows
from tapir.review.sample import allocate, bucket_of, stratified_sample
from tapir.review.spot_check import write_pulled

from .conftest import LABELS, tiny_recipe_dict


def recipe_for(tmp_path, **review):
    mix = {label: 1 / len(LABELS) for label in LABELS}
    return recipe_from_dict(
        tiny_recipe_dict(tmp_path, taxonomy={"labels": LABELS, "target_mix": mix}, review=review)
    )


def rows(n_math=12, n_writing=4, n_other=1):
    out = []
    for task, n in (("Math", n_math), ("Writing", n_writing), ("Others", n_other)):
        for i in range(n):
            out.append(
                {
                    "id": f"{task}-{i}",
                    "instruction": f"{task} instruction {i}",
                    "input": "",
                    "teacher_response": "teacher says",
                    "student_response": "student says",
                    "refined_response": "refined says",
                    "task": task,
                    "difficulty": "hard" if i % 2 else "easy",
                    "mfd": 3.0 if i % 2 else 0.0,
                    "teacher_score": 8.0,
                    "student_score": 5.0 if i % 2 else 8.0,
                    "classifier_model": "google/gemma-3-270m (Q4_K_M GGUF, PyPI)",
                    "judge_model": "judge-x",
                    "origin": "seed",
                }
            )
    return out


def test_allocation_covers_every_stratum_then_follows_sizes():
    sizes = {("Math", "hard"): 30, ("Math", "easy"): 10, ("Writing", "easy"): 2, ("Others", "hard"): 1}
    counts = allocate(sizes, 12)
    assert sum(counts.values()) == 12
    assert all(c >= 1 for c in counts.values())
    assert counts[("Math", "hard")] > counts[("Math", "easy")] > counts[("Others", "hard")]
    assert all(counts[k] <= sizes[k] for k in sizes)
    assert sum(allocate(sizes, 100).values()) == 43  # never more than there is
    few = allocate(sizes, 2)  # fewer records than strata: the biggest strata
    assert few == {("Math", "hard"): 1, ("Math", "easy"): 1, ("Writing", "easy"): 0, ("Others", "hard"): 0}


def test_stratified_sample_is_deterministic_distinct_and_stratified():
    data = rows() + rows()[:3]  # up-sampled copies of the same examples
    sample = stratified_sample(data, 8, seed=1)
    assert len(sample) == 8 and len({r["id"] for r in sample}) == 8
    strata = Counter(r["review_stratum"] for r in sample)
    assert set(strata) == {"Math | easy", "Math | hard", "Writing | easy", "Writing | hard", "Others | easy"}
    assert stratified_sample(data, 8, seed=1) == sample
    assert stratified_sample(data, 8, seed=2) != sample


def test_mfd_edges_make_the_buckets():
    assert bucket_of({"mfd": -1.0}, [0, 2]) == "mfd < 0"
    assert bucket_of({"mfd": 1.0}, [0, 2]) == "0 <= mfd < 2"
    assert bucket_of({"mfd": 5.0}, [0, 2]) == "mfd >= 2"
    assert bucket_of({"mfd": 5.0, "difficulty": "hard"}, None) == "hard"


def test_record_shows_what_the_reviewer_needs(tmp_path):
    recipe = recipe_for(tmp_path)
    row = {**rows()[1], "review_stratum": "Math | hard", "input": "x = 3"}
    record = build_record(row, recipe).to_dict()
    assert record["id"] == "Math-1"
    assert record["fields"]["instruction"].endswith("**Input:**\n\nx = 3")
    assert {"teacher_response", "refined_response", "student_response", "grades"} <= set(record["fields"])
    assert (
        "| MFD | 3 |" in record["fields"]["grades"] and "| task label | Math |" in record["fields"]["grades"]
    )
    assert record["metadata"] == {
        "task": "Math",
        "difficulty": "hard",
        "stratum": "Math | hard",
        "origin": "seed",
        "mfd": 3.0,
        "teacher_score": 8.0,
        "student_score": 5.0,
    }
    # Suggestions pre-fill the classifier's label and the judge's verdict; agents are cleaned to
    # the characters Argilla accepts.
    assert record["suggestions"]["task_label"]["value"] == "Math"
    assert record["suggestions"]["task_label"]["agent"] == "google/gemma-3-270m Q4_K_M GGUF PyPI"
    assert record["suggestions"]["student_falls_short"]["value"] == "yes"
    blind = build_record(row, recipe_for(tmp_path, suggestions=False)).to_dict()
    assert blind["suggestions"] == {}


def test_bad_round_rows_name_the_column(tmp_path):
    from tapir.errors import DataError

    with pytest.raises(DataError, match="missing column\\(s\\) teacher_response, difficulty"):
        check_rows([{"id": "a", "instruction": "x", "task": "Math"}], "round_1.parquet")
    bad = [{**rows()[0], "instruction": "  "}]
    with pytest.raises(DataError, match="empty instruction in row\\(s\\) Math-0"):
        check_rows(bad, "round_1.parquet")


def answer(user, status="submitted", **values):
    return {"user_id": user, "status": status, "values": {k: {"value": v} for k, v in values.items()}}


def server_records():
    """What tapir.review.argilla_client.fetch_records returns, with every kind of answer reviewers give."""
    meta = lambda task, difficulty: {"task": task, "difficulty": difficulty, "mfd": 3.0, "stratum": "s"}  # noqa: E731
    return [
        {  # two reviewers relabel
            "id": "a",
            "metadata": meta("Math", "hard"),
            "responses": [
                answer("u1", task_label="Writing", keep="keep", student_falls_short="yes", refined_better=5),
                answer("u2", task_label="Writing", keep="keep", student_falls_short="no", refined_better=4),
            ],
        },
        {  # rejected by one, kept by the other: a tie keeps the example
            "id": "b",
            "metadata": meta("Writing", "easy"),
            "responses": [
                answer("u1", task_label="Writing", keep="reject", student_falls_short="no"),
                answer("u2", task_label="Math", keep="keep", student_falls_short="no", fix="Fixed."),
            ],
        },
        {  # rejected; a draft and a valueless discard decide nothing
            "id": "c",
            "metadata": meta("Others", "easy"),
            "responses": [
                answer("u1", task_label="Others", keep="reject", student_falls_short="yes", refined_better=1),
                answer("u2", status="draft", task_label="Math", keep="keep"),
                {"user_id": "u3", "status": "discarded", "values": None},
            ],
        },
        {"id": "d", "metadata": meta("Math", "easy"), "responses": []},
    ]


def test_decisions_and_agreement_from_answers():
    answers = answers_from_records(server_records())
    assert len(answers) == 7 and Counter(a["status"] for a in answers)["discarded"] == 1
    decisions = {d["id"]: d for d in decide(answers)}
    assert set(decisions) == {"a", "b", "c"}  # d has no answer; drafts and discards decide nothing
    assert decisions["a"]["task"] == "Writing" and decisions["a"]["label_changed"]
    assert decisions["b"]["task"] == "Writing" and not decisions["b"]["label_changed"]  # tie keeps ours
    assert not decisions["b"]["rejected"] and decisions["b"]["fix"] == "Fixed."
    assert decisions["c"]["rejected"] and decisions["c"]["reviewers"] == 1

    report = agreement(answers, decide(answers), sent=4)
    assert report["records_sent"] == 4 and report["records_reviewed"] == 3
    assert report["answers"] == {"discarded": 1, "draft": 1, "submitted": 5}
    # classifier: a×2 disagree, b: 1 agree 1 disagree, c agrees -> 2 of 5
    assert report["classifier"]["answers"] == 5 and report["classifier"]["agree"] == 2
    assert report["classifier"]["per_task"]["Math"] == {"answers": 2, "agreement": 0.0}
    # judge: a hard: yes agrees, no disagrees; b easy: no, no agree; c easy: yes disagrees -> 3 of 5
    assert report["judge"]["agree"] == 3 and report["judge"]["agreement"] == 0.6
    assert report["refinement"] == {
        "answers": 3,
        "mean_rating": 3.333,
        "better": 2,
        "same": 0,
        "worse": 1,
        "histogram": {"1": 1, "4": 1, "5": 1},
    }
    assert report["between_reviewers"]["pairs"] == 2
    assert report["between_reviewers"]["label_agreement"] == 0.5
    assert report["corrections"] == {"labels_changed": 1, "rejected": 1, "fixes": 1}


def test_pulled_answers_become_corrections_for_the_next_run(tmp_path):
    recipe = recipe_for(tmp_path)
    folder = write_pulled(recipe, "round_1", server_records(), Console(quiet=True), source="test")
    assert {p.name for p in folder.iterdir()} >= {
        "answers.parquet",
        "decisions.parquet",
        "agreement.json",
        "agreement.md",
        "agreement.png",
    }
    assert (folder / "agreement.png").stat().st_size > 5000
    assert "| task classifier (label) | 5 | 40% |" in (folder / "agreement.md").read_text()
    corrections = load_corrections(recipe)
    assert corrections.labels == {"a": "Writing"}
    assert corrections.rejected == ["c"]
    assert corrections.fixes == {"b": "Fixed."}

    # A later pull of another round wins for the same example.
    later = [{**server_records()[0], "responses": [answer("u9", task_label="Others", keep="reject")]}]
    write_pulled(recipe, "round_2", later, Console(quiet=True), source="test")
    report = json.loads((recipe.resolved_review_dir / "round_2" / "agreement.json").read_text())
    report["pulled"] = "9999-01-01T00:00:00+00:00"
    (recipe.resolved_review_dir / "round_2" / "agreement.json").write_text(json.dumps(report))
    corrections = load_corrections(recipe)
    assert corrections.labels == {"a": "Others"} and corrections.rejected == ["a", "c"]

    # The recipe decides what is applied.
    off = load_corrections(recipe_for(tmp_path, override_labels=False, drop_rejected=False, use_fixes=False))
    assert not off and off.sources
    assert not load_corrections(recipe_for(tmp_path, apply=False)).sources


def test_a_label_outside_the_taxonomy_is_reported_not_applied(tmp_path):
    recipe = recipe_for(tmp_path)
    folder = recipe.resolved_review_dir / "round_1"
    folder.mkdir(parents=True)
    pd.DataFrame(
        [{"id": "a", "reviewers": 1, "original_task": "Math", "task": "Poetry", "label_changed": True,
          "rejected": False, "fix": None}]
    ).to_parquet(folder / "decisions.parquet")  # fmt: skip
    corrections = load_corrections(recipe)
    assert corrections.labels == {} and corrections.unknown_labels == {"a": "Poetry"}


def test_apply_review_step_changes_only_the_decided_rows():
    step = ApplyReview(labels={"a": "Writing"}, rejected=["b"], fixes={"c": "Fixed."})

    def apply(row):
        return next(step.process([row]))[0]

    a = apply({"id": "a", "task": "Math", "difficulty": "hard"})
    assert (
        a["task"] == "Writing"
        and a["task_classifier"] == "Math"
        and a["review_note"] == "label Math -> Writing"
    )
    b = apply({"id": "b", "task": "Math", "difficulty": "easy", "excluded_reason": None})
    assert b["difficulty"] == "excluded" and b["excluded_reason"] == "review: rejected by a reviewer"
    c = apply({"id": "c", "task": "Math", "difficulty": "easy"})
    assert c["review_response"] == "Fixed." and c["difficulty"] == "easy"
    d = apply({"id": "d", "task": "Math", "difficulty": "easy"})
    assert d["review_note"] is None and d["task"] == "Math" and d["review_response"] is None


def test_connection_settings_errors_name_the_setting_and_hide_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.delenv("ARGILLA_WORKSPACE", raising=False)
    monkeypatch.setenv("MY_ARGILLA_KEY", "s3cret-argilla-key-value")
    recipe = recipe_for(tmp_path, argilla={"api_key_env": "MY_ARGILLA_KEY"})
    with pytest.raises(RecipeError, match="review.argilla.api_url: not set"):
        resolve(recipe.review.argilla)
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    connection = resolve(recipe.review.argilla)
    assert connection.workspace == "argilla" and connection.api_url == "http://127.0.0.1:9"
    with pytest.raises(EndpointError, match="review.argilla.api_url: cannot reach http://127.0.0.1:9") as err:
        connect(connection)
    assert "s3cret" not in str(err.value)
    monkeypatch.delenv("MY_ARGILLA_KEY")
    with pytest.raises(RecipeError, match=r"review.argilla.api_key_env: \$MY_ARGILLA_KEY is not set"):
        resolve(recipe.review.argilla)


def test_review_settings_are_validated(tmp_path):
    with pytest.raises(RecipeError, match="review.round: 5 is not a round"):
        recipe_for(tmp_path, round=5)
    with pytest.raises(RecipeError, match="review.mfd_edges"):
        recipe_for(tmp_path, mfd_edges=[2, 1])
    with pytest.raises(RecipeError, match="review.dataset"):
        recipe_for(tmp_path, dataset="{nam}-{split}")
    assert recipe_for(tmp_path, round="warmup").review.round == "warmup"
