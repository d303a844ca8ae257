"""Curriculum training with TRL on a tiny random model (integration tier): loss, masks, EOS, resume,
skipping, errors, and the closed loop through the scripted pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from tapir.errors import DataError, TrainingError
from tapir.manifest import sha256_file
from tapir.pipelines.tasks import NOT_GRADED
from tapir.recipe import Recipe, recipe_from_dict
from tapir.stage_contract import DataManifest, data_settings, header, write_manifest
from tapir.training.dry_run import data_status
from tapir.training.rounds import check_data, run_training
from tapir.training.sft import RoundSpec, build_trainer

from .conftest import make_recipe
from .tiny_student import build_tiny_student

pytestmark = pytest.mark.integration

QUIET = Console(quiet=True)
ANSWERS = ["Blue is calm.", "Red is loud.", "Green grows.", "Gold shines."]


def conversation(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Describe colour number {i}."},
            {"role": "assistant", "content": ANSWERS[i % len(ANSWERS)]},
        ]
    }


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    corpus = [m["content"] for i in range(8) for m in conversation(i)["messages"]]
    corpus += ["### Instruction:\n", "### Response:\n"] * 4
    return build_tiny_student(tmp_path_factory.mktemp("tiny") / "model", corpus)


def data_run(folder: Path, rounds: dict[str, int], recipe: Recipe) -> Path:
    """A folder shaped like `tapir data` output for ``recipe``, with `rows` conversations per split."""
    (folder / "data").mkdir(parents=True)
    for split, rows in rounds.items():
        table = [conversation(i) for i in range(rows)]
        if not table:
            table = {"messages": []}
            datasets.Dataset.from_dict(table).to_parquet(str(folder / "data" / f"{split}.parquet"))
            continue
        datasets.Dataset.from_list(table).to_parquet(str(folder / "data" / f"{split}.parquet"))
    settings = data_settings(recipe)
    files = {  # as `tapir data` records them: training checks each round file against its sha256
        f"data/{split}.parquet": {"rows": rows, "sha256": sha256_file(folder / "data" / f"{split}.parquet")}
        for split, rows in rounds.items()
    }
    write_manifest(
        folder,
        DataManifest(**header("data", recipe, None), seed=recipe.seed, data_settings=settings, files=files),
    )
    return folder


def recipe_for(tmp_path: Path, model: Path, rounds: int = 2, **training) -> Recipe:
    settings = {
        "max_steps": 4,
        "learning_rate": 5e-3,
        "per_device_train_batch_size": 2,
        "max_length": 128,
        "save_steps": 2,
        "mfd_student": "base",  # these rounds train on the hand-made data folder as it is
        **training,
    }
    return recipe_from_dict(
        {
            "name": "tiny-train",
            "seed": 3,
            "output_dir": str(tmp_path / "data-run"),
            "cache_dir": str(tmp_path / "cache"),
            "student": {"backend": "transformers", "model": str(model)},
            "curriculum": {"rounds": rounds, "hard_share": [0.5] * rounds, "warmup_size": 2},
            "training": settings,
        }
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_rounds_train_in_order_log_loss_and_change_weights(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model)
    data_run(tmp_path / "data-run", {"warmup": 2, "round_1": 4, "round_2": 4}, recipe)
    train_dir = run_training(recipe, QUIET)

    assert [p.name for p in sorted(train_dir.iterdir()) if p.is_dir() and p.name != "plots"] == [
        "round_1",
        "round_2",
        "warmup",
    ]
    manifests = {n: json.loads((train_dir / n / "manifest.json").read_text()) for n in ("warmup", "round_1")}
    # Each round starts from the previous one's model and records it.
    assert manifests["round_1"]["parent"]["model"] == str(train_dir / "warmup" / "model")
    assert manifests["round_1"]["parent"]["key"] == manifests["warmup"]["key"]
    assert manifests["warmup"]["data"]["rows"] == 2 and len(manifests["round_1"]["data"]["sha256"]) == 64
    assert manifests["round_1"]["recipe_hash"] == recipe.fingerprint()

    log = [json.loads(line) for line in (train_dir / "round_1" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert all(r["tokens_per_second"] > 0 for r in log if "loss" in r)

    before, after = weights(tiny_model), weights(train_dir / "round_2" / "model")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)
    assert not (train_dir / "round_1" / "checkpoints").exists()  # removed once the round is saved
    summary = json.loads((train_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == ["warmup", "round_1", "round_2"]
    assert (train_dir / "plots" / "training_loss.png").stat().st_size > 0

    # Nothing changed: every round is skipped and no weight is touched.
    again = run_training(recipe, QUIET)
    summary = json.loads((again / "summary.json").read_text())
    assert {r["status"] for r in summary["rounds"]} == {"skipped"}
    assert all(torch.equal(after[k], v) for k, v in weights(train_dir / "round_2" / "model").items())


def test_only_assistant_tokens_carry_loss(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model)
    path = data_run(tmp_path / "d", {"round_1": 2}, recipe) / "data" / "round_1.parquet"
    trainer = build_trainer(recipe, RoundSpec("round_1", path, str(tiny_model), tmp_path / "r1"))
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = ids[labels != -100]
    assert tokenizer.decode(trained) == ANSWERS[0] + tokenizer.eos_token
    assert torch.equal(labels[labels != -100], trained)
    prompt = tokenizer.decode(ids[labels == -100])
    assert "Describe colour number 0." in prompt and "### Response:" in prompt


def test_trained_tiny_model_stops_with_eos(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model, rounds=1, max_steps=80, learning_rate=1e-2, warmup_steps=0.0)
    data_run(tmp_path / "data-run", {"round_1": 4}, recipe)
    model_dir = run_training(recipe, QUIET) / "round_1" / "model"

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert tokenizer.eos_token_id in _as_list(model.generation_config.eos_token_id)
    prompt = tokenizer.apply_chat_template(
        conversation(1)["messages"][:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=40, do_sample=False)[0][prompt["input_ids"].shape[1] :]
    assert out[-1].item() == tokenizer.eos_token_id and len(out) < 40
    assert tokenizer.decode(out, skip_special_tokens=True).strip() == ANSWERS[1]


def _as_list(value):
    return value if isinstance(value, list) else [value]


class InterruptAfterLogging(TrainerCallback):
    """Ctrl-C once a step past the last checkpoint is in train_log.jsonl (resume trains it again)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.at_step and logs and "loss" in logs:
            raise KeyboardInterrupt


def test_interrupted_round_resumes_from_its_last_checkpoint(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model, rounds=1, max_steps=6, save_steps=2)
    data_run(tmp_path / "data-run", {"round_1": 4}, recipe)
    with pytest.raises(KeyboardInterrupt):
        run_training(recipe, QUIET, callbacks=[InterruptAfterLogging(at_step=3)])
    folder = recipe.resolved_train_dir / "round_1"
    logged = [json.loads(line)["step"] for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1] == 3  # step 3 was logged, its checkpoint never written
    assert (folder / "checkpoints" / "checkpoint-2").is_dir()
    assert not (folder / "manifest.json").exists() and not (folder / "model").exists()

    run_training(recipe, QUIET)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from"] == "checkpoint-2"
    assert manifest["metrics"]["global_step"] == 6
    log = map(json.loads, (folder / "train_log.jsonl").read_text().splitlines())
    steps = [r["step"] for r in log if "loss" in r]
    # Steps 1-2 kept from before the interruption, 3-6 after it (step 3 once, though logged twice);
    # a restart from scratch would log 1, 2, 1, 2, ...
    assert steps == [1, 2, 3, 4, 5, 6]


def test_changed_settings_retrain_the_round_and_those_after(tmp_path, tiny_model):
    data_run(tmp_path / "data-run", {"round_1": 2, "round_2": 2}, recipe_for(tmp_path, tiny_model))
    run_training(recipe_for(tmp_path, tiny_model), QUIET)
    train_dir = run_training(recipe_for(tmp_path, tiny_model, learning_rate=1e-3), QUIET)
    statuses = [r["status"] for r in json.loads((train_dir / "summary.json").read_text())["rounds"]]
    assert statuses == ["trained", "trained"]


def test_bad_inputs_fail_with_one_line_naming_the_cause(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model)
    with pytest.raises(DataError, match="no finished data run.*make data"):
        run_training(recipe, QUIET)

    data_run(tmp_path / "data-run", {"round_1": 2, "round_2": 0}, recipe)
    with pytest.raises(DataError, match=r"round_2: .*round_2.parquet has no rows"):
        run_training(recipe, QUIET)
    assert not recipe.resolved_train_dir.exists()  # refused before training anything

    (tmp_path / "data-run" / "data" / "round_2.parquet").unlink()
    with pytest.raises(DataError, match="round_2: round file missing"):
        run_training(recipe, QUIET)

    data_run(tmp_path / "ok", {"round_1": 2, "round_2": 2}, recipe)
    ok = {"output_dir": str(tmp_path / "ok")}
    trained = run_training(recipe.model_copy(update=ok), QUIET) / "round_1" / "model"
    too_long = r"training.max_length: 4096 exceeds the context of .*\(512 tokens\)"
    with pytest.raises(TrainingError, match=too_long):
        run_training(recipe_for(tmp_path, tiny_model, max_length=4096).model_copy(update=ok), QUIET)
    assert trained.is_dir()  # a setting that cannot work does not cost the rounds already trained

    no_eos = tmp_path / "no_eos.jinja"
    no_eos.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    with pytest.raises(TrainingError, match="training.chat_template: the template never writes .*'<eos>'"):
        run_training(recipe_for(tmp_path, tiny_model, chat_template=str(no_eos)).model_copy(update=ok), QUIET)

    no_markers = tmp_path / "no_markers.jinja"
    no_markers.write_text("{% for m in messages %}{{ m['content'] }}{{ eos_token }}\n{% endfor %}")
    with pytest.raises(TrainingError, match=r"assistant_only_loss needs \{% generation %\} markers"):
        recipe = recipe_for(tmp_path, tiny_model, chat_template=str(no_markers))
        run_training(recipe.model_copy(update=ok), QUIET)


def test_stale_data_is_refused_naming_the_setting_unless_allowed(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model)
    data_run(tmp_path / "data-run", {"round_1": 2, "round_2": 2}, recipe)
    edited = recipe.model_copy(
        update={"curriculum": recipe.curriculum.model_copy(update={"hard_share": [0.25, 0.75]})}
    )
    names = ["round_1", "round_2"]
    stale = r"curriculum.hard_share: \[0.5, 0.5\] → \[0.25, 0.75\]: changed since `tapir data`.*make data"
    with pytest.raises(DataError, match=stale):
        check_data(edited, recipe.resolved_output_dir, names, closed_loop=False)
    check_data(edited, recipe.resolved_output_dir, names, closed_loop=False, allow_stale_data=True)
    plan = data_status(edited)  # what `tapir train --dry-run` shows
    assert plan["status"].startswith("stale") and plan["changed"][0].startswith("curriculum.hard_share:")
    assert data_status(recipe) == {"status": "current"}
    # What only changes how training runs, or where things go, is not a data-side setting.
    moved = recipe.model_copy(update={"training": recipe.training.model_copy(update={"learning_rate": 1.0})})
    check_data(moved, recipe.resolved_output_dir, names, closed_loop=False)
    served = recipe.model_copy(update={"judge": recipe.judge.model_copy(update={"timeout_s": 5.0})})
    check_data(served, recipe.resolved_output_dir, names, closed_loop=False)


def test_the_llama2_template_masks_all_but_the_answers_and_their_eos(tiny_model):
    """The paper recipe's template (Llama-2-chat's format, as the released Tapir-7B uses): TRL's
    checks pass and only each answer with its EOS carries loss."""
    from tapir.chat_templates import packaged_template
    from tapir.training.model_setup import check_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = packaged_template("llama2_chat").read_text(encoding="utf-8")
    check_template(tokenizer, True, "training.chat_template")
    messages = [
        {"role": "system", "content": "Be brief."},
        *conversation(0)["messages"],
        *conversation(1)["messages"],
    ]
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    kept = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(kept) == f"{ANSWERS[0]} <eos>{ANSWERS[1]} <eos>"
    text = tokenizer.decode(encoded["input_ids"])
    assert text.startswith("<bos>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nDescribe colour number 0. [/INST]")


def test_lora_rounds_save_merged_models(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model, rounds=1, lora={"enabled": True, "r": 4, "alpha": 8})
    data_run(tmp_path / "data-run", {"round_1": 2}, recipe)
    model_dir = run_training(recipe, QUIET) / "round_1" / "model"
    assert not (model_dir / "adapter_config.json").exists()
    before, after = weights(tiny_model), weights(model_dir)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # adapted linear layers only


@pytest.mark.e2e
def test_closed_loop_regrades_only_the_student(tmp_path, tiny_model):
    """`tapir distill` as a user runs it: data with a scripted teacher and judge, rounds trained
    on the tiny model, and after each round the real checkpoint answers the pool again. Only
    those answers are graded anew; teacher answers and grades come from the response cache."""
    scripted = {"backend": "scripted", "model": "canned"}  # labels: the ones the prompt names
    recipe = make_recipe(
        tmp_path,
        teacher=scripted,
        judge=scripted,
        student={"backend": "transformers", "model": str(tiny_model), "generation": {"max_new_tokens": 8}},
        training={"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 128, "learning_rate": 1e-3},
    )
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    result = subprocess.run(
        [sys.executable, "-m", "tapir.cli", "distill", "--recipe", str(recipe_file)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Logging error" not in result.stderr  # distilabel's log queue is gone before training

    seen = pool(recipe.resolved_output_dir)  # every instruction answered and graded so far
    graded = _graded(seen)  # (instruction, answer) pairs the judge has graded
    train_dir = recipe.resolved_train_dir
    assert [p.name for p in (train_dir / "logs").glob("engine.*.log")] == ["engine.scripted_canned.log"]
    names = ["warmup", "round_1", "round_2"]
    assert all((train_dir / n / "manifest.json").is_file() for n in names)
    for before, after in zip(names, names[1:]):
        rescored = train_dir / before / "rescored"
        manifest = json.loads((rescored / "manifest.json").read_text())
        assert manifest["models"]["student"]["model"].startswith(str(train_dir / before / "model") + "@")
        usage = json.loads((rescored / "summary.json").read_text())["usage"]
        rows = pool(rescored)
        # Every row got a new student answer and a new grade of it. Teacher answers seen before
        # were not graded again (cache): the judge's other calls are the grade and the task
        # label of each instruction new to this pass (expansions of newly hard seeds).
        new = [i for i in rows if i not in seen]
        # An answer graded before for the same instruction (an empty one, say, which the teacher
        # gave too) is a grade prompt asked before: the response cache answers it.
        # A failed answer is not graded at all (its row says so): no judge call for it.
        failed = {i for i in rows if _not_graded(rows[i], "student")}
        repeated = sum((i, rows[i]["student_response"] or "") in graded for i in rows if i not in failed)
        failed_new_teacher = sum(_not_graded(rows[i], "teacher") for i in new)
        assert usage["student"]["calls"] == len(rows)
        assert (
            usage["judge"]["calls"] == len(rows) - len(failed) - repeated + 2 * len(new) - failed_new_teacher
        )
        kept = [i for i in rows if i in seen]
        assert kept and all(rows[i]["teacher_score"] == seen[i]["teacher_score"] for i in kept)
        assert any(rows[i]["student_response"] != seen[i]["student_response"] for i in kept)
        # one engine for the whole run: the re-score attached to the distill run's scripted
        # engine (teacher and judge) instead of starting one of its own
        assert not list((rescored / "logs").glob("engine.*.log"))
        trained_on = json.loads((train_dir / after / "manifest.json").read_text())["data"]["path"]
        assert trained_on == str(rescored / "data" / f"{after}.parquet")
        seen.update({i: rows[i] for i in new})
        graded.update(_graded(rows))


@pytest.mark.e2e
def test_warmed_up_student_grades_every_round_of_a_fixed_curriculum(tmp_path, tiny_model):
    """The paper's order on `tapir data` + `tapir train`: the warm-up round trains first, its
    checkpoint answers the pool and is graded, and every curriculum round comes from those grades
    (one re-score, none after the later rounds)."""
    scripted = {"backend": "scripted", "model": "canned"}
    recipe = make_recipe(
        tmp_path,
        teacher=scripted,
        judge=scripted,
        student={"backend": "transformers", "model": str(tiny_model), "generation": {"max_new_tokens": 8}},
        training={"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128, "learning_rate": 1e-3},
    )
    assert recipe.training.mfd_student == "warmed_up" and not recipe.training.closed_loop
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    for command in ("data", "train"):
        result = subprocess.run(
            [sys.executable, "-m", "tapir.cli", command, "--recipe", str(recipe_file)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    train_dir = recipe.resolved_train_dir
    assert "MFD of the curriculum rounds graded: the warmup checkpoint" in " ".join(result.stdout.split())
    rescored = train_dir / "warmup" / "rescored"
    manifest = json.loads((rescored / "manifest.json").read_text())
    warmup_model = str(train_dir / "warmup" / "model")
    assert manifest["models"]["student"]["model"].startswith(warmup_model + "@")
    summary = json.loads((rescored / "summary.json").read_text())
    assert summary["judging"]["student"].startswith(warmup_model)
    first = json.loads((recipe.resolved_output_dir / "summary.json").read_text())
    assert first["judging"]["student"] == str(tiny_model)  # the data pass graded the base student
    warmup = json.loads((train_dir / "warmup" / "manifest.json").read_text())["data"]["path"]
    assert warmup == str(recipe.resolved_output_dir / "data" / "warmup.parquet")
    for name in ("round_1", "round_2"):
        trained_on = json.loads((train_dir / name / "manifest.json").read_text())["data"]["path"]
        assert trained_on == str(rescored / "data" / f"{name}.parquet")
        assert not (train_dir / name / "rescored").exists()


def _not_graded(row: dict, who: str) -> bool:
    return str(row.get(f"{who}_score_error") or "").startswith(NOT_GRADED)


def _graded(rows: dict[str, dict]) -> set[tuple[str, str]]:
    return {
        (i, row[f"{who}_response"] or "")
        for i, row in rows.items()
        for who in ("student", "teacher")
        if not _not_graded(row, who)
    }


def pool(run: Path) -> dict[str, dict]:
    table = datasets.load_dataset("parquet", data_files=str(run / "data" / "pool.parquet"), split="train")
    return {row["instruction"]: row for row in table}


def test_packed_rounds_train(tmp_path, tiny_model):
    recipe = recipe_for(tmp_path, tiny_model, rounds=1, packing=True, max_steps=2)
    data_run(tmp_path / "data-run", {"round_1": 6}, recipe)
    manifest = json.loads((run_training(recipe, QUIET) / "round_1" / "manifest.json").read_text())
    assert manifest["training"]["packing"] is True
    assert manifest["metrics"]["global_step"] == 2 and manifest["metrics"]["final_loss"] > 0


def test_a_round_reports_its_loss_to_tensorboard(tmp_path, tiny_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = recipe_for(tmp_path, tiny_model, rounds=1, max_steps=2, report_to="tensorboard")
    data_run(tmp_path / "data-run", {"round_1": 4}, recipe)
    round_dir = run_training(recipe, QUIET) / "round_1"
    events = list((round_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in round_dir.rglob("*"))
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    losses = accumulator.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2] and all(e.value > 0 for e in losses)
    manifest = json.loads((round_dir / "manifest.json").read_text())
    assert manifest["training"]["report_to"] == ["tensorboard"]


def test_push_model_dry_run_writes_a_loadable_model_with_its_card_and_the_push_sends_it(
    tmp_path, tiny_model, hub, monkeypatch
):
    from huggingface_hub import ModelCard

    from tapir.publishing.model_push import push_model

    from .test_cli import tapir

    recipe = recipe_for(tmp_path, tiny_model, rounds=1, max_steps=2)
    recipe.hub.repo_id, recipe.hub.model_repo_id = "org/tiny-data", "org/tiny-student"
    run_dir = data_run(tmp_path / "data-run", {"warmup": 2, "round_1": 4}, recipe)
    curriculum = [
        {"split": "warmup", "rows": 2, "hard": 0, "hard_share": None},
        {"split": "round_1", "rows": 4, "hard": 2, "hard_share": 0.5},
    ]
    (run_dir / "summary.json").write_text(json.dumps({"curriculum": curriculum}))
    run_training(recipe, QUIET)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))

    result = tapir("push", "--recipe", recipe_file, "--model", "round_1", "--dry-run")
    assert result.returncode == 0, result.stderr
    folder = recipe.resolved_hub_dir.with_name(recipe.resolved_hub_dir.name + "-round_1")
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets == ["org/tiny-data"] and card.data.library_name == "transformers"
    assert card.data.base_model is None  # a local folder is not a Hub model to link
    assert "| round_1 | 4 | 2 | 0.50 | yes |" in card.text and "| warmup | 2 | 0 | - | yes |" in card.text
    assert "has not been evaluated" in card.text
    manifest = json.loads((folder / "tapir_round_manifest.json").read_text())
    assert (
        manifest["round"] == "round_1"
        and f"| steps trained / final loss | {manifest['metrics']['global_step']} /" in card.text
    )
    model = AutoModelForCausalLM.from_pretrained(folder)
    AutoTokenizer.from_pretrained(folder).apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    assert model.config.vocab_size > 0

    missing = tapir("push", "--recipe", recipe_file, "--model", "round_7", "--dry-run")
    assert missing.returncode == 2 and "--model: 'round_7' is neither a trained round" in missing.stderr

    monkeypatch.setenv("HF_TOKEN", "hf_" + "Standin" * 4)
    hub.identity = {"name": "alice", "orgs": [{"name": "org", "roleInOrg": "write"}],
                    "auth": {"accessToken": {"role": "write"}}}  # fmt: skip
    url = push_model(recipe, QUIET, "1")
    assert url.startswith(f"{hub.url}/org/tiny-student/commit/")
    assert hub.created[0]["type"] == "model" and hub.created[0]["visibility"] == "private"
    sent = hub.files["org/tiny-student"]
    assert {"README.md", "config.json", "model.safetensors", "tapir_round_manifest.json"} <= set(sent)
    assert sent["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_the_training_section_speaks_sft_configs_names(tmp_path):
    """Fields passed to SFTConfig as they are carry its own names; a training field named like an
    SFTConfig field is passed (none is shadowed under the same name with another meaning); and a
    recipe value reaches the SFTConfig the trainer gets."""
    import dataclasses

    from trl import SFTConfig

    from tapir.recipe import SFT_FIELDS, TrainingSettings
    from tapir.training.sft import sft_config

    sft_names = {f.name for f in dataclasses.fields(SFTConfig)}
    assert set(SFT_FIELDS) <= sft_names
    handled_apart = {"max_steps", "gradient_checkpointing", "output_dir"}  # None -> -1; renamed; per round
    named_like_sft = set(TrainingSettings.model_fields) & sft_names
    assert named_like_sft - handled_apart <= set(SFT_FIELDS)
    settings = TrainingSettings(num_train_epochs=2.5, lr_scheduler_type="linear", warmup_steps=7)
    config = sft_config(settings, tmp_path, seed=3, eos_token="</s>")
    assert (config.num_train_epochs, config.lr_scheduler_type, config.warmup_steps) == (2.5, "linear", 7)
    assert config.per_device_train_batch_size == settings.per_device_train_batch_size
