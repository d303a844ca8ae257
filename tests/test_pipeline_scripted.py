"""The whole graph with a scripted LLM (integration tier): outputs, counts, caching, manifest, card."""

import json

import datasets
import pytest
import yaml
from rich.console import Console

from tapir.pipelines.run import run_data
from tapir.serving.simulator import MALFORMED
from tapir.staging import OUTPUT_MARKER

from .conftest import make_recipe

pytestmark = pytest.mark.integration


@pytest.mark.e2e
def test_full_graph_writes_curriculum_and_counts_failures(tmp_path, scripted):
    recipe = make_recipe(tmp_path)
    out = run_data(recipe, Console(quiet=True))
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())

    # Parse failures are counted per output, not hidden: 2 malformed judge answers per grade
    # and 2 unlabelled tasks; 2 empty teacher responses.
    failures = summary["parse_failures"]
    assert failures["judge grade of teacher"] == 2 and failures["judge grade of student"] == 2
    assert failures["task label"] == 2
    assert failures["teacher response"] == 2
    pool = datasets.load_dataset("parquet", data_files=str(out / "data/pool.parquet"), split="train")
    excluded = [r for r in pool if r["difficulty"] == "excluded"]
    assert len(excluded) == 4 and all(r["mfd"] is None for r in excluded)
    assert all(r["excluded_reason"] for r in excluded)
    assert summary["difficulty"]["hard"] + summary["difficulty"]["easy"] + 4 == len(pool)

    # Hard seeds were expanded and the expansions went through the same grading.
    assert summary["difficulty"]["hard"] > 0
    expanded = [r for r in pool if r["origin"] == "expansion"]
    assert 0 < len(expanded) <= 3 * 2
    assert all(r["parent_id"] and r["teacher_score"] is not None for r in expanded)

    # Curriculum: warm-up + 2 rounds; hard share follows the schedule.
    rounds = {r["split"]: r for r in summary["curriculum"]}
    assert set(rounds) == {"warmup", "round_1", "round_2"}
    for name, target in (("round_1", 0.4), ("round_2", 0.8)):
        assert rounds[name]["hard_share"] == pytest.approx(target, abs=1 / rounds[name]["rows"] + 1e-9)
    round_1 = datasets.load_dataset("parquet", data_files=str(out / "data/round_1.parquet"), split="train")
    assert round_1[0]["messages"][1]["role"] == "assistant"
    assert all(r["response_source"] == "refined" for r in round_1)
    assert "distilabel_metadata" not in round_1.column_names

    # Task histogram before/after re-balancing is reported and the mix moved toward the target.
    assert sum(summary["tasks_after"].values()) == sum(summary["tasks_before"].values())
    # Usage: every role made calls; teacher includes expansion and refinement.
    assert {"teacher", "student", "judge"} <= set(summary["usage"])
    assert summary["llm_calls_this_run"] == sum(u["calls"] for u in summary["usage"].values())

    # Manifest and card.
    assert manifest["recipe_hash"] == recipe.fingerprint()
    assert manifest["libraries"]["distilabel"] == "1.5.3"
    assert manifest["models"]["judge"]["backend"] == "llamacpp"
    assert manifest["files"]["data/round_1.parquet"]["rows"] == len(round_1)
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["configs"][0]["config_name"] == "curriculum"
    assert "## Task mix before / after re-balancing" in card
    assert "## LLM calls and cost" in card
    for plot in summary["plots"]:
        assert (out / plot).stat().st_size > 1000

    # The folder loads with datasets as a Hub dataset would.
    curriculum = datasets.load_dataset(str(out), "curriculum", cache_dir=str(tmp_path / "hf-cache"))
    assert set(curriculum) == {"warmup", "round_1", "round_2"}
    assert curriculum["round_2"].num_rows == len(
        datasets.load_dataset("parquet", data_files=str(out / "data/round_2.parquet"), split="train")
    )

    # An unchanged re-run comes entirely from distilabel's cache: zero LLM calls.
    out_again = run_data(recipe, Console(quiet=True))
    again = json.loads((out_again / "summary.json").read_text())
    assert again["llm_calls_this_run"] == 0
    assert again["curriculum"] == summary["curriculum"]

    # Changing only the curriculum re-runs only the curriculum: still zero LLM calls.
    changed = make_recipe(tmp_path, curriculum={"rounds": 2, "hard_share": [0.5, 0.5], "warmup_size": 2})
    out_changed = run_data(changed, Console(quiet=True))
    summary_changed = json.loads((out_changed / "summary.json").read_text())
    assert summary_changed["llm_calls_this_run"] == 0
    assert summary_changed["curriculum"][1]["hard_share_target"] == 0.5

    # --reask-unparsed asks again exactly the cached answers that did not parse (the scripted
    # model gives the same ones, so the data does not change).
    reasked = json.loads(
        (run_data(recipe, Console(quiet=True), reask_unparsed=True) / "summary.json").read_text()
    )
    assert reasked["llm_calls_this_run"] == sum(summary["parse_failures"].values()) > 0
    assert reasked["curriculum"] == summary["curriculum"]


def test_no_secret_reaches_outputs_or_cache(tmp_path, scripted, monkeypatch):
    token = "hf_" + "Zx9" * 12
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "q7" * 12)
    recipe = make_recipe(tmp_path, expansion={"enabled": False}, refinement={"enabled": False})
    out = run_data(recipe, Console(quiet=True))
    for folder in (out, tmp_path / "cache"):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".md", ".yaml", ".jsonl", ".log", ".parquet"):
                data = path.read_bytes()
                assert token.encode() not in data, path
                assert b"sk-test-" not in data, path


def test_everything_excluded_is_one_clear_error_and_no_output(tmp_path, scripted):
    rows = [{"instruction": f"{MALFORMED} request {i} here."} for i in range(4)]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = make_recipe(tmp_path, seeds={"source": str(path), "limit": None})
    from tapir.errors import DataError

    with pytest.raises(DataError, match=r"nothing to train on: all 4 rows were excluded \(judge grade"):
        run_data(recipe, Console(quiet=True))
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())


def test_new_student_regrades_only_the_student(tmp_path, scripted):
    """Teacher answers, teacher grades and task labels come from cache when the student
    changes (as in a later curriculum round): only student answers and their grades are new."""
    sections = {"expansion": {"enabled": False}, "refinement": {"enabled": False}}
    first = run_data(make_recipe(tmp_path, **sections), Console(quiet=True))
    pool_size = json.loads((first / "summary.json").read_text())["steps"][1]["rows_in"]
    changed = make_recipe(
        tmp_path, student={"backend": "transformers", "model": "student-round-2"}, **sections
    )
    usage = json.loads((run_data(changed, Console(quiet=True)) / "summary.json").read_text())["usage"]
    assert usage["teacher"]["calls"] == 0  # its batches were all answered from the response cache
    assert usage["student"]["calls"] == pool_size
    assert usage["judge"]["calls"] == pool_size  # student grades only; teacher grades and labels cached


def test_hub_dry_run_is_the_upload_and_loads_with_datasets(tmp_path, scripted, monkeypatch, hub):
    """`tapir push --dry-run`: data files, recipe, manifest, plots and our card, loadable with
    datasets; the card renders as Markdown with the run's real figures; no secret inside. The
    real push sends exactly that folder, private, in one commit (to a stand-in Hub)."""
    from huggingface_hub import DatasetCard
    from markdown_it import MarkdownIt

    from tapir.publishing.hub_push import push

    planted = "hf_" + "PlantedHubToken" * 3
    monkeypatch.setenv("HF_TOKEN", planted)
    recipe = make_recipe(tmp_path)
    out = run_data(recipe, Console(quiet=True))
    summary = json.loads((out / "summary.json").read_text())
    folder = push(recipe, Console(quiet=True), repo_id="org/tapir-tiny", dry_run=True)
    assert folder == tmp_path / "out-hub"
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {"README.md", "recipe.yaml", "manifest.json", "summary.json", "data/round_1.parquet"} <= names
    assert {"data/pool.parquet", "data/selected.parquet", "plots/task_histogram.png"} <= names

    for config, splits in (("curriculum", {"warmup", "round_1", "round_2"}), ("pool", {"train"})):
        loaded = datasets.load_dataset(str(folder), config, cache_dir=str(tmp_path / "hf-cache"))
        assert set(loaded) == splits
    text = (folder / "README.md").read_text()
    card = DatasetCard(text)
    assert card.data.license == recipe.seeds.license
    assert [c["config_name"] for c in card.data.configs][:3] == ["curriculum", "selected", "pool"]
    html = MarkdownIt("commonmark").enable("table").render(text.split("---", 2)[2])
    assert html.count("<table>") >= 6 and '<img src="plots/task_histogram.png"' in html
    # Real figures: the task histogram, parse failures and MFD statistics of this run.
    plan = summary["expansion_plan"]
    for task, count in summary["tasks_after"].items():
        asked = ", ".join(f"{n} from {source}" for source, n in plan.get(task, {}).items()) or "-"
        assert f"| {task} | {summary['tasks_before'].get(task, 0)} | {asked} | {count} |" in text
    assert f"| judge grade of teacher | {summary['parse_failures']['judge grade of teacher']} |" in text
    assert f"mean {summary['mfd']['mean']:.2f}" in text
    assert "No human review has been pulled for this run" in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert planted.encode() not in path.read_bytes(), path

    # The real push: huggingface_hub creates a private dataset repo and commits the same files.
    hub.identity = {"name": "alice", "orgs": [{"name": "org", "roleInOrg": "write"}],
                    "auth": {"accessToken": {"role": "write"}}}  # fmt: skip
    url = push(recipe, Console(quiet=True), repo_id="org/tapir-tiny")
    assert url.startswith(f"{hub.url}/datasets/org/tapir-tiny/commit/") and len(hub.commits) == 1
    assert hub.created == [
        {"name": "tapir-tiny", "organization": "org", "visibility": "private", "type": "dataset"}
    ]
    uploaded = hub.files["org/tapir-tiny"]
    local = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert uploaded == {k: v for k, v in local.items() if k != OUTPUT_MARKER}  # the marker stays local
    assert hub.tokens == {planted} and not any(planted.encode() in blob for blob in uploaded.values())

    # One round only: the card declares exactly that split.
    single = push(recipe, Console(quiet=True), round_=2, dry_run=True, to=str(tmp_path / "one"))
    assert {p.name for p in (single / "data").rglob("*")} == {"round_2.parquet"}
    assert set(datasets.load_dataset(str(single), cache_dir=str(tmp_path / "hf-cache"))) == {"round_2"}
