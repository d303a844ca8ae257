"""The whole review loop through a real Argilla server: make data -> review push -> reviewers
answer -> review pull -> the next make data honours the answers -> the card and the Hub dry run
show them. (The data runs use the scripted LLM; the server is real.)"""

import json
import uuid

import argilla as rg
import datasets
import httpx
import pandas as pd
import pytest
from rich.console import Console

from tapir.pipelines.run import run_data
from tapir.publishing.hub_push import push
from tapir.review.spot_check import pull_review, push_review

from .conftest import make_recipe

pytestmark = pytest.mark.argilla

KEY_ENV = "TAPIR_TEST_ARGILLA_KEY"
FIX = "The reviewer's corrected answer: 2 + 2 = 4."


def review_recipe(tmp_path, server, **review):
    return make_recipe(
        tmp_path,
        rebalance={"enabled": False},  # every graded row stays selected: the test follows rows by id
        review={
            "argilla": {"api_url": server.url, "api_key_env": KEY_ENV, "workspace": server.workspace},
            "dataset": "{name}-{split}-" + uuid.uuid4().hex[:8],
            "sample_size": 6,
            **review,
        },
    )


def submit(dataset, record_id, user_id, **values):
    """An answer logged with the SDK (how scripts and notebooks annotate)."""
    record = next(r for r in dataset.records(with_suggestions=True) if r.id == record_id)
    for question, value in values.items():
        record.responses.add(rg.Response(question, value, user_id=user_id, status="submitted"))
    dataset.records.log([record])


def submit_as_ui(server, key, dataset, record_id, bulk=False, **values):
    """An answer sent the way Argilla's web UI sends it: its own REST endpoints, with a key."""
    record = next(r for r in dataset.records if r.id == record_id)
    body = {"values": {q: {"value": v} for q, v in values.items()}, "status": "submitted"}
    headers = {"X-Argilla-Api-Key": key}
    if bulk:  # the UI's "submit all selected" path
        body["record_id"] = str(record._server_id)
        reply = httpx.post(f"{server.url}/api/v1/me/responses/bulk", json={"items": [body]}, headers=headers)
        assert reply.status_code == 200 and reply.json()["items"][0]["error"] is None, reply.text
    else:
        reply = httpx.post(
            f"{server.url}/api/v1/records/{record._server_id}/responses", json=body, headers=headers
        )
        assert reply.status_code == 201, reply.text


def submitted_in_ui(server, key, dataset):
    """How many records the UI's "Submitted" queue lists for the key's user (the search index)."""
    query = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"},
                                  "values": ["submitted"]}]}}  # fmt: skip
    reply = httpx.post(
        f"{server.url}/api/v1/me/datasets/{dataset.id}/records/search",
        json=query,
        headers={"X-Argilla-Api-Key": key},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["total"]


def test_reviewers_answers_change_the_next_round(tmp_path, scripted, argilla_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, argilla_server.api_key)
    planted = "hf_" + "PlantedFakeToken" * 3
    monkeypatch.setenv("HF_TOKEN", planted)
    console = Console(record=True, width=160)
    recipe = review_recipe(tmp_path, argilla_server)
    out = run_data(recipe, console)
    round_1 = pd.read_parquet(out / "data/round_1.parquet")

    # push: a stratified sample of round_1, as records keyed by the pipeline's row ids.
    folder = push_review(recipe, console)
    sample = pd.read_parquet(folder / "sample.parquet")
    assert 0 < len(sample) <= 6 and set(sample["id"]) <= set(round_1["id"])
    assert sample["id"].is_unique
    strata = set(round_1.drop_duplicates("id").apply(lambda r: f"{r['task']} | {r['difficulty']}", axis=1))
    assert set(sample["review_stratum"]) == strata or len(sample) == 6  # every stratum when room allows
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    name = recipe.review.dataset.format(name=recipe.name, split="round_1")
    dataset = client.datasets(name=name, workspace=argilla_server.workspace)
    records = {r.id: r for r in dataset.records(with_suggestions=True)}
    assert set(records) == set(sample["id"])
    assert {q.name for q in dataset.settings.questions} == {
        "task_label",
        "keep",
        "student_falls_short",
        "refined_better",
        "fix",
    }
    first = sample.iloc[0]
    assert records[first["id"]].suggestions["task_label"].value == first["task"]
    assert records[first["id"]].metadata["mfd"] == pytest.approx(first["mfd"])

    # A second push updates in place (same ids), it does not duplicate.
    push_review(recipe, Console(quiet=True))
    assert len(list(dataset.records)) == len(sample)

    # Reviewers answer: relabel one (SDK), reject one and fix one (as the web UI does), confirm one.
    relabel, reject, fix = sample["id"].iloc[0], sample["id"].iloc[1], sample["id"].iloc[2]
    old_label = sample.set_index("id").loc[relabel, "task"]
    new_label = next(label for label in recipe.taxonomy.labels if label != old_label)
    me, key = client.me.id, argilla_server.api_key
    submit(
        dataset, relabel, me, task_label=new_label, keep="keep", student_falls_short="yes", refined_better=4
    )
    submit_as_ui(
        argilla_server, key, dataset, reject,
        task_label=sample["task"].iloc[1], keep="reject", student_falls_short="no",
    )  # fmt: skip
    submit_as_ui(
        argilla_server, key, dataset, fix, bulk=True,
        task_label=sample["task"].iloc[2], keep="keep", student_falls_short="no", fix=FIX,
    )  # fmt: skip
    assert submitted_in_ui(argilla_server, key, dataset) == 3
    if argilla_server.reviewer_key:  # a second reviewer (annotator) agrees on the relabel, in the UI
        submit_as_ui(
            argilla_server, argilla_server.reviewer_key, dataset, relabel,
            task_label=new_label, keep="keep", student_falls_short="yes",
        )  # fmt: skip
        assert submitted_in_ui(argilla_server, argilla_server.reviewer_key, dataset) == 1

    # pull: answers, decisions and the agreement report beside the round.
    folder = pull_review(recipe, console)
    decisions = pd.read_parquet(folder / "decisions.parquet").set_index("id")
    assert decisions.loc[relabel, "task"] == new_label and decisions.loc[relabel, "label_changed"]
    assert decisions.loc[reject, "rejected"] and decisions.loc[fix, "fix"] == FIX
    report = json.loads((folder / "agreement.json").read_text())
    assert report["records_sent"] == len(sample) and report["records_reviewed"] == 3
    assert report["corrections"] == {"labels_changed": 1, "rejected": 1, "fixes": 1}
    assert report["classifier"]["agree"] == 2  # the two confirmed labels
    if argilla_server.reviewer_key:
        assert (
            report["between_reviewers"]["pairs"] == 1
            and report["between_reviewers"]["label_agreement"] == 1.0
        )

    # The next make data honours the corrections.
    again = run_data(recipe, console)
    pool = pd.read_parquet(again / "data/pool.parquet").set_index("id")
    assert pool.loc[relabel, "task"] == new_label and pool.loc[relabel, "task_classifier"] == old_label
    assert pool.loc[reject, "difficulty"] == "excluded"
    assert pool.loc[reject, "excluded_reason"] == "review: rejected by a reviewer"
    selected = pd.read_parquet(again / "data/selected.parquet").set_index("id")
    assert reject not in selected.index
    assert selected.loc[fix, "review_response"] == FIX
    curriculum = pd.concat(
        pd.read_parquet(again / f"data/{s}.parquet") for s in ("warmup", "round_1", "round_2")
    )
    assert reject not in set(curriculum["id"])
    fixed = curriculum[curriculum["id"] == fix]
    assert all(fixed["response_source"] == "review") and all(
        m[1]["content"] == FIX for m in fixed["messages"]
    )
    summary = json.loads((again / "summary.json").read_text())
    assert summary["review"]["labels_overridden"] == 1 and summary["review"]["rows_rejected"] == 1
    assert summary["tasks_before"].get(new_label, 0) >= 1
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["review"]["decisions"][0]["file"].endswith("round_1/decisions.parquet")

    # The Hub dry run: our card with the round's real figures and the review, loadable with datasets.
    hub = push(recipe, console, repo_id="org/tapir-test", dry_run=True, to=str(tmp_path / "hub"))
    card = (hub / "README.md").read_text()
    assert "### Review of round_1" in card and "| task classifier (label) |" in card
    assert f"| data/round_1.parquet | {len(pd.read_parquet(again / 'data/round_1.parquet'))} |" in card
    assert "2 task labels" not in card and "1 task labels overridden, 1 rows rejected" in card
    # Every split loads as one config although only some carry a reviewer's fix (one schema).
    loaded = datasets.load_dataset(str(hub), "curriculum", cache_dir=str(tmp_path / "hf-cache"))
    assert set(loaded) == {"warmup", "round_1", "round_2"}
    assert FIX in [r for split in loaded.values() for r in split["review_response"]]
    assert (hub / "review/round_1/agreement.json").is_file() and (hub / "recipe.yaml").is_file()

    # No secret anywhere: outputs, review folder, upload folder, the console log.
    for root in (again, recipe.resolved_review_dir, hub):
        for path in root.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert planted.encode() not in blob and argilla_server.api_key.encode() not in blob, path
    log = console.export_text()
    assert planted not in log and argilla_server.api_key not in log
