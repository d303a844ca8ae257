"""Every bad input gets one line: a corpus of hostile command lines over every verb.

Each case is a real `tapir` command line against files and endpoints a user could have: a
recipe that is not UTF-8, a seed file of the wrong shape, a corrupted parquet, an endpoint that
is not OpenAI-compatible, preferences and ratings out of range, an output folder that is not
ours. Each must end with exit status 2 and exactly one ``tapir: error:`` line naming the
field or file at fault, with no traceback, and leave the earlier good run's folder byte-for-byte
as it was. The cases run in one driver process (``tests/cli_cases.py``) after one real data
run (scripted backend) that the cases must not damage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import SHARED_DATA

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("bad-input-corpus")]  # one corpus run

REPO = Path(__file__).resolve().parents[1]
SIM_KEY = "corpus-right-key"


class World:
    """The files, folders and endpoints the cases are built from."""

    def __init__(self, root: Path, urls: dict[str, str]) -> None:
        self.root, self.urls = root, urls
        self.out = root / "out"
        self.base = {
            "name": "corpus",
            "seed": 3,
            "output_dir": str(self.out),
            "cache_dir": str(root / "cache"),
            "teacher": {"backend": "scripted", "model": "teacher"},
            "student": {"backend": "scripted", "model": "student"},
            "judge": {"backend": "scripted", "model": "judge"},
            "seeds": {"source": str(self.file("seeds.jsonl", _seed_lines(10))), "shuffle": False},
            "expansion": {"per_hard_seed": 1, "max_hard_seeds": 2},
            "curriculum": {"rounds": 2, "hard_share": [0.4, 0.8], "warmup_size": 2},
            # the data pass's round files are what training reads (warmed_up re-builds them after
            # the warm-up round, so a broken one would never be read)
            "training": {"mfd_student": "base"},
            "pipeline": {"batch_size": 4},
            "evaluation": {
                "alpaca_eval": {
                    "reference": str(
                        SHARED_DATA / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_reference.json"
                    ),
                    "limit": 2,
                },
                "mt_bench": {
                    "questions": str(SHARED_DATA / "mt_bench" / "question.jsonl"),
                    "judge_prompts": str(SHARED_DATA / "mt_bench" / "judge_prompts.jsonl"),
                    "reference_answers": str(SHARED_DATA / "mt_bench" / "reference_answer" / "gpt-4.jsonl"),
                    "per_category": 1,
                },
                "published": [],
            },
            "review": {"argilla": {"api_url": urls["closed"], "workspace": "w"}},
        }
        self.recipe = self.variant("good", {})

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def variant(self, name: str, changes: dict[str, Any]) -> Path:
        """A recipe file: the good one with ``changes`` ({"a.b": value}; value None deletes)."""
        data = json.loads(json.dumps(self.base))
        for dotted, value in changes.items():
            *parents, last = dotted.split(".")
            node = data
            for key in parents:
                node = node.setdefault(key, {})
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value
        path = self.root / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def endpoint(self, role: str, url: str, **extra: Any) -> dict[str, Any]:
        spec = {"backend": "openai", "model": "sim", "base_url": url, "api_key_env": "CORPUS_KEY", **extra}
        return {role: spec}

    def user_folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        (folder / "notes.txt").write_text("the user's own file")
        return folder


def _seed_lines(n: int, prefix: str = "Explain topic") -> str:
    return "".join(json.dumps({"instruction": f"{prefix} {i} in two sentences."}) + "\n" for i in range(n))


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _alpaca(preferences: list[Any]) -> str:
    rows = [
        {
            "instruction": f"q{i}",
            "output_1": "ref " * (i + 1),
            "output_2": "model " * (i + 2),
            "generator_1": "gpt4_1106_preview",
            "generator_2": "m",
            "preference": p,
        }
        for i, p in enumerate(preferences)
    ]
    return json.dumps(rows)


def _judgments(rows: list[dict[str, Any]]) -> str:
    base = {"question_id": 81, "turn": 1, "category": "writing", "model": "m"}
    return _jsonl([{**base, **row} for row in rows])


# (case id, what the error line must contain, how to build the case from the World)
Case = tuple[str, str, Callable[[World], dict[str, Any]]]


def _cmd(*argv: Any, **extra: Any) -> dict[str, Any]:
    return {"argv": [str(a) for a in argv], **extra}


def _data(w: World, recipe: Path | None = None, *more: Any, **extra: Any) -> dict[str, Any]:
    return _cmd("data", "--recipe", recipe or w.recipe, *more, **extra)


def _set(w: World, *overrides: str) -> dict[str, Any]:
    argv: list[Any] = []
    for override in overrides:
        argv += ["--set", override]
    return _data(w, None, *argv)


def _data_with(
    w: World, name: str, changes: dict[str, Any], argv_extra: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return _data(w, w.variant(name, changes), *(argv_extra or []), **extra)


def _seeds(w: World, name: str, content: str | bytes, **seed_fields: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {"seeds.source": str(w.file(name, content))}
    changes.update({f"seeds.{k}": v for k, v in seed_fields.items()})
    return _data_with(w, f"seeds-{name}", changes)


def _recipe_text(w: World, name: str, content: str | bytes) -> dict[str, Any]:
    return _data(w, w.file(name, content))


def _train(w: World, changes: dict[str, Any] | None = None, *more: Any, name: str = "") -> dict[str, Any]:
    recipe = w.variant(f"train-{name}", changes) if changes else w.recipe
    return _cmd("train", "--recipe", recipe, *more)


def _broken_data_run(w: World, name: str, damage: Callable[[Path], None]) -> dict[str, Any]:
    """A copy of the good data run with ``damage`` done to it; `tapir train` reads the copy."""
    import shutil

    copy = w.root / f"data-{name}"
    if not copy.exists():
        shutil.copytree(w.out, copy)
        damage(copy)
    return _cmd("train", "--recipe", w.recipe, "--output", copy, intact=[str(w.out), str(copy)])


def _eval(w: World, changes: dict[str, Any] | None = None, *more: Any, name: str = "") -> dict[str, Any]:
    recipe = w.variant(f"eval-{name}", changes) if changes else w.recipe
    return _cmd("eval", "--recipe", recipe, *more)


def _score_alpaca(w: World, name: str, content: str | bytes, *more: Any) -> dict[str, Any]:
    return _cmd(
        "eval", "score-alpaca", "--annotations", w.file(name, content), "--cache-dir", w.root / "cache", *more
    )


def _score_mt(w: World, name: str, content: str | bytes, *more: Any) -> dict[str, Any]:
    return _cmd("eval", "score-mt-bench", "--judgments", w.file(name, content), *more)


def _push(w: World, *more: Any, recipe: Path | None = None, **extra: Any) -> dict[str, Any]:
    return _cmd("push", "--recipe", recipe or w.recipe, *more, **extra)


def _review(w: World, verb: str, *more: Any, recipe: Path | None = None, **extra: Any) -> dict[str, Any]:
    return _cmd("review", verb, "--recipe", recipe or w.recipe, *more, **extra)


def _write_parquet_garbage(folder: Path, name: str) -> None:
    (folder / "data" / name).write_bytes(b"PAR1 this is not a parquet file PAR1")


def _rewrite_parquet(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / name)


def _edit_manifest(
    folder: Path, change: Callable[[dict], None] | None = None, text: str | None = None
) -> None:
    path = folder / "manifest.json"
    if text is not None:
        path.write_text(text)
        return
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


CASES: list[Case] = [
    # --- the recipe file itself -----------------------------------------------------------
    ("recipe-missing", "recipe file not found", lambda w: _data(w, w.root / "nope.yaml")),
    ("recipe-is-a-folder", "recipe file not found", lambda w: _data(w, w.root)),
    (
        "recipe-not-utf8",
        "not UTF-8",
        lambda w: _recipe_text(w, "latin1.yaml", "name: caf\xe9\n".encode("latin-1")),
    ),
    ("recipe-bad-yaml", "invalid YAML", lambda w: _recipe_text(w, "bad.yaml", "name: [unclosed\n")),
    ("recipe-empty", "recipe is empty", lambda w: _recipe_text(w, "empty.yaml", "")),
    ("recipe-a-list", "a recipe is a mapping", lambda w: _recipe_text(w, "list.yaml", "- a\n- b\n")),
    ("recipe-a-scalar", "a recipe is a mapping", lambda w: _recipe_text(w, "scalar.yaml", "42\n")),
    ("recipe-binary", "not UTF-8", lambda w: _recipe_text(w, "binary.yaml", bytes(range(256)))),
    ("recipe-unknown-section", "colour", lambda w: _recipe_text(w, "unknown.yaml", "name: x\ncolour: red\n")),
    ("recipe-no-name", "name", lambda w: _recipe_text(w, "noname.yaml", "seed: 1\n")),
    ("recipe-bad-name", "name", lambda w: _recipe_text(w, "badname.yaml", "name: a b/c\n")),
    ("set-without-equals", "--set", lambda w: _set(w, "seed")),
    ("set-unknown-field", "teacher.modle", lambda w: _set(w, "teacher.modle=x")),
    ("set-unknown-section", "nosuch", lambda w: _set(w, "nosuch.field=1")),
    ("set-bad-yaml-value", "curriculum.hard_share", lambda w: _set(w, "curriculum.hard_share=[0.1,")),
    # --- recipe fields: types, ranges, choices ---------------------------------------------
    ("seed-not-int", "seed", lambda w: _set(w, "seed=abc")),
    ("teacher-backend-unknown", "teacher.backend", lambda w: _set(w, "teacher.backend=ollama")),
    ("student-backend-unknown", "student.backend", lambda w: _set(w, "student.backend=tgi")),
    ("judge-backend-unknown", "judge.backend", lambda w: _set(w, "judge.backend=1")),
    ("teacher-timeout-zero", "teacher.timeout_s", lambda w: _set(w, "teacher.timeout_s=0")),
    ("teacher-retries-negative", "teacher.max_retries", lambda w: _set(w, "teacher.max_retries=-1")),
    ("teacher-concurrency-zero", "teacher.max_concurrency", lambda w: _set(w, "teacher.max_concurrency=0")),
    ("teacher-context-zero", "teacher.context_length", lambda w: _set(w, "teacher.context_length=0")),
    (
        "teacher-tokens-zero",
        "teacher.generation.max_new_tokens",
        lambda w: _set(w, "teacher.generation.max_new_tokens=0"),
    ),
    (
        "teacher-temperature-nan",
        "teacher.generation.temperature",
        lambda w: _set(w, "teacher.generation.temperature=.nan"),
    ),
    ("judge-temperature-negative", "judging.temperature", lambda w: _set(w, "judging.temperature=-1")),
    ("batch-size-zero", "pipeline.batch_size", lambda w: _set(w, "pipeline.batch_size=0")),
    ("replicas-zero", "pipeline.replicas", lambda w: _set(w, "pipeline.replicas=0")),
    ("replicas-too-many", "pipeline.replicas", lambda w: _set(w, "pipeline.replicas=99")),
    ("runner-unknown", "pipeline.runner", lambda w: _set(w, "pipeline.runner=spark")),
    ("rounds-zero", "curriculum.rounds", lambda w: _set(w, "curriculum.rounds=0")),
    ("hard-share-length", "hard_share", lambda w: _set(w, "curriculum.hard_share=[0.5]")),
    ("hard-share-decreasing", "must not decrease", lambda w: _set(w, "curriculum.hard_share=[0.9,0.1]")),
    ("hard-share-above-one", "hard_share", lambda w: _set(w, "curriculum.hard_share=[0.5,1.5]")),
    ("hard-share-nan", "hard_share", lambda w: _set(w, "curriculum.hard_share=[0.5,.nan]")),
    ("round-size-negative", "curriculum.round_size", lambda w: _set(w, "curriculum.round_size=-1")),
    ("round-sizes-length", "curriculum.round_sizes", lambda w: _set(w, "curriculum.round_sizes=[4]")),
    ("round-sizes-zero", "curriculum.round_sizes", lambda w: _set(w, "curriculum.round_sizes=[4,0]")),
    (
        "round-sizes-and-round-size",
        "curriculum.round_sizes: give round_sizes or round_size",
        lambda w: _set(w, "curriculum.round_sizes=[4,8]", "curriculum.round_size=4"),
    ),
    ("warmup-negative", "curriculum.warmup_size", lambda w: _set(w, "curriculum.warmup_size=-1")),
    ("carry-over-above-one", "curriculum.carry_over", lambda w: _set(w, "curriculum.carry_over=2")),
    ("delta-negative-out-of-range", "difficulty.delta", lambda w: _set(w, "difficulty.delta=-50")),
    ("delta-nan", "difficulty.delta", lambda w: _set(w, "difficulty.delta=.nan")),
    ("delta-huge", "difficulty.delta", lambda w: _set(w, "difficulty.delta=1e308")),
    ("delta-infinite", "difficulty.delta", lambda w: _set(w, "difficulty.delta=.inf")),
    ("delta-text", "difficulty.delta", lambda w: _set(w, "difficulty.delta=high")),
    (
        "min-teacher-score-out-of-range",
        "difficulty.min_teacher_score",
        lambda w: _set(w, "difficulty.min_teacher_score=11"),
    ),
    ("mix-unknown-label", "target_mix", lambda w: _set(w, "taxonomy.target_mix={Maths: 1.0}")),
    ("mix-negative", "target_mix", lambda w: _set(w, "taxonomy.target_mix={Math: 1.5, Others: -0.5}")),
    ("mix-sum", "target_mix", lambda w: _set(w, "taxonomy.target_mix={Math: 0.2}")),
    ("labels-empty", "labels", lambda w: _set(w, "taxonomy.labels=[]")),
    ("labels-duplicate", "labels", lambda w: _set(w, "taxonomy.labels=[Math,Math,Others]")),
    ("fallback-not-a-label", "fallback_label", lambda w: _set(w, "taxonomy.fallback_label=Misc")),
    (
        "classifier-role-unknown",
        "taxonomy.classifier_role",
        lambda w: _set(w, "taxonomy.classifier_role=oracle"),
    ),
    ("expansion-per-seed-zero", "expansion.per_hard_seed", lambda w: _set(w, "expansion.per_hard_seed=0")),
    (
        "expansion-temperature-negative",
        "expansion.temperature",
        lambda w: _set(w, "expansion.temperature=-0.5"),
    ),
    ("rebalance-size-zero", "rebalance.size", lambda w: _set(w, "rebalance.size=0")),
    (
        "refine-unknown-label",
        "refinement.prompts",
        lambda w: _set(w, "refinement.prompts={Poetry: refine_writing}"),
    ),
    (
        "refine-unknown-template",
        "refine_nosuch",
        lambda w: _set(w, "refinement.default_prompt=refine_nosuch"),
    ),
    ("judge-template-unknown", "judge_nosuch", lambda w: _set(w, "judging.template=judge_nosuch")),
    ("seeds-limit-zero", "seeds.limit", lambda w: _set(w, "seeds.limit=0")),
    ("seeds-limit-negative", "seeds.limit", lambda w: _set(w, "seeds.limit=-3")),
    ("seeds-max-chars-zero", "seeds.max_chars", lambda w: _set(w, "seeds.max_chars=0")),
    # --- models and endpoints -----------------------------------------------------------------
    (
        "gguf-missing",
        "teacher.model",
        lambda w: _data_with(w, "gguf", {"teacher": {"backend": "llamacpp", "model": "/no/such.gguf"}}),
    ),
    (
        "transformers-folder-missing",
        "student.model",
        lambda w: _data_with(w, "tf", {"student": {"backend": "transformers", "model": "./no/such/folder"}}),
    ),
    (
        "chat-template-missing",
        "chat_template",
        lambda w: _data_with(w, "tpl", {"teacher.chat_template": "/no/such.jinja"}),
    ),
    (
        "url-invalid-bracket",
        "teacher.base_url",
        lambda w: _data_with(w, "url1", w.endpoint("teacher", "http://[::1"), env={"CORPUS_KEY": "k"}),
    ),
    (
        "url-no-scheme",
        "teacher.base_url",
        lambda w: _data_with(w, "url2", w.endpoint("teacher", "localhost:8000/v1"), env={"CORPUS_KEY": "k"}),
    ),
    (
        "url-ftp",
        "teacher.base_url",
        lambda w: _data_with(
            w, "url3", w.endpoint("teacher", "ftp://example.org/v1"), env={"CORPUS_KEY": "k"}
        ),
    ),
    (
        "url-spaces",
        "teacher.base_url",
        lambda w: _data_with(
            w, "url4", w.endpoint("teacher", "http://not a host/v1"), env={"CORPUS_KEY": "k"}
        ),
    ),
    (
        "endpoint-unreachable",
        "cannot reach",
        lambda w: _data_with(w, "closed", w.endpoint("judge", w.urls["closed"]), env={"CORPUS_KEY": "k"}),
    ),
    (
        "endpoint-404-everywhere",
        "not an OpenAI-compatible",
        lambda w: _data_with(w, "e404", w.endpoint("teacher", w.urls["404"]), env={"CORPUS_KEY": "k"}),
    ),
    (
        "endpoint-html",
        "not an OpenAI-compatible",
        lambda w: _data_with(w, "html", w.endpoint("student", w.urls["html"]), env={"CORPUS_KEY": "k"}),
    ),
    (
        "endpoint-wrong-key",
        "teacher.api_key_env",
        lambda w: _data_with(w, "key", w.endpoint("teacher", w.urls["sim"]), env={"CORPUS_KEY": "wrong"}),
    ),
    (
        "endpoint-model-not-served",
        "judge.model",
        lambda w: _data_with(
            w, "model", w.endpoint("judge", w.urls["sim"], model="other"), env={"CORPUS_KEY": SIM_KEY}
        ),
    ),
    (
        "endpoint-key-unset",
        "api_key_env",
        lambda w: _data_with(
            w, "unset", w.endpoint("teacher", "https://api.openai.com/v1"), env={"CORPUS_KEY": None}
        ),
    ),
    (
        "endpoint-chat-404",
        "chat/completions is not an OpenAI-compatible",
        lambda w: _data_with(w, "chat404", w.endpoint("teacher", w.urls["chat404"]), env={"CORPUS_KEY": "k"}),
    ),
    (
        "endpoint-chat-html",
        "chat/completions is not an OpenAI-compatible",
        lambda w: _data_with(w, "chathtml", w.endpoint("judge", w.urls["chathtml"]), env={"CORPUS_KEY": "k"}),
    ),
    # --- seed files -----------------------------------------------------------------------------
    (
        "seeds-file-missing",
        "seeds.source",
        lambda w: _data_with(w, "nofile", {"seeds.source": str(w.root / "none.jsonl")}),
    ),
    ("seeds-folder", "seeds.source", lambda w: _data_with(w, "folder", {"seeds.source": str(w.root)})),
    ("seeds-csv", "unsupported format", lambda w: _seeds(w, "seeds.csv", "instruction\nhi\n")),
    (
        "seeds-not-utf8",
        "not UTF-8",
        lambda w: _seeds(w, "latin1.jsonl", '{"instruction": "caf\xe9"}\n'.encode("latin-1")),
    ),
    (
        "seeds-json-object",
        "one JSON object",
        lambda w: _seeds(w, "object.json", json.dumps({"instruction": "a", "input": ""}, indent=2)),
    ),
    (
        "seeds-json-object-one-line",
        "one JSON object",
        lambda w: _seeds(w, "object1.json", json.dumps({"rows": [{"instruction": "a"}]})),
    ),
    ("seeds-json-invalid", "not valid JSON", lambda w: _seeds(w, "broken.json", '[{"instruction": "a"},')),
    (
        "seeds-jsonl-invalid-line",
        "line 2",
        lambda w: _seeds(w, "broken.jsonl", '{"instruction": "a"}\n{nope\n'),
    ),
    (
        "seeds-list-of-strings",
        "not a JSON object",
        lambda w: _seeds(w, "strings.json", json.dumps(["a", "b"])),
    ),
    ("seeds-jsonl-numbers", "not a JSON object", lambda w: _seeds(w, "numbers.jsonl", "1\n2\n")),
    ("seeds-empty-file", "has no rows", lambda w: _seeds(w, "empty.jsonl", "")),
    ("seeds-empty-list", "has no rows", lambda w: _seeds(w, "emptylist.json", "[]")),
    (
        "seeds-no-instruction-column",
        "seeds.instruction_column",
        lambda w: _seeds(w, "nocol.jsonl", _jsonl([{"prompt": "a"}])),
    ),
    (
        "seeds-instruction-object",
        "not text",
        lambda w: _seeds(w, "obj.jsonl", _jsonl([{"instruction": "a"}, {"instruction": {"text": "b"}}])),
    ),
    (
        "seeds-instruction-list",
        "not text",
        lambda w: _seeds(w, "list.jsonl", _jsonl([{"instruction": ["a", "b"]}])),
    ),
    ("seeds-instruction-number", "not text", lambda w: _seeds(w, "num.jsonl", _jsonl([{"instruction": 42}]))),
    (
        "seeds-instruction-empty",
        "empty",
        lambda w: _seeds(w, "blank.jsonl", _jsonl([{"instruction": "a"}, {"instruction": "   "}])),
    ),
    (
        "seeds-instruction-null",
        "empty",
        lambda w: _seeds(w, "null.jsonl", _jsonl([{"instruction": "a"}, {"instruction": None}])),
    ),
    (
        "seeds-input-object",
        "not text",
        lambda w: _seeds(w, "inputobj.jsonl", _jsonl([{"instruction": "a", "input": {"x": 1}}])),
    ),
    (
        "seeds-too-long",
        "seeds.max_chars",
        lambda w: _seeds(w, "long.jsonl", _jsonl([{"instruction": "a"}, {"instruction": "x" * 100_000}])),
    ),
    (
        "seeds-duplicates",
        "same instruction",
        lambda w: _seeds(w, "dup.jsonl", _jsonl([{"instruction": "a"}, {"instruction": " A "}])),
    ),
    ("seeds-parquet-corrupt", "cannot read", lambda w: _seeds(w, "bad.parquet", b"PAR1 garbage PAR1")),
    (
        "seeds-id-column-missing",
        "seeds.id_column",
        lambda w: _seeds(w, "ids.jsonl", _seed_lines(3), id_column="uid"),
    ),
    # --- output folders that are not ours ------------------------------------------------------------
    (
        "output-recipes-folder",
        "not a tapir data folder",
        lambda w: _data(w, None, "--output", REPO / "recipes", intact=[str(w.out), str(REPO / "recipes")]),
    ),
    (
        "output-user-folder",
        "not a tapir data folder",
        lambda w: _data(
            w, None, "--output", w.user_folder("mine"), intact=[str(w.out), str(w.root / "mine")]
        ),
    ),
    (
        "output-a-file",
        "is a file",
        lambda w: _data(
            w, None, "--output", w.file("plain.txt", "x"), intact=[str(w.out), str(w.root / "files")]
        ),
    ),
    (
        "output-a-train-folder",
        "holds a tapir train run",
        lambda w: _data(
            w,
            None,
            "--output",
            _marked(w, "trainrun", "train"),
            intact=[str(w.out), str(w.root / "trainrun")],
        ),
    ),
    # --- train ----------------------------------------------------------------------------------
    (
        "train-no-data-run",
        "no finished data run",
        lambda w: _cmd("train", "--recipe", w.recipe, "--output", w.root / "nodata"),
    ),
    (
        "train-data-folder-not-ours",
        "no finished data run",
        lambda w: _cmd("train", "--recipe", w.recipe, "--output", w.user_folder("notdata")),
    ),
    (
        "train-incomplete-data",
        "is incomplete",
        lambda w: _broken_data_run(
            w, "incomplete", lambda d: _edit_manifest(d, lambda m: m.update(failed_calls=3))
        ),
    ),
    (
        "train-stale-data",
        "curriculum.hard_share: [0.4, 0.8] → [0.3, 0.9]: changed since `tapir data`",
        lambda w: _train(w, {"curriculum.hard_share": [0.3, 0.9]}, name="stale"),
    ),
    (
        "train-manifest-older-schema",
        "written by an older tapir",
        lambda w: _broken_data_run(
            w, "oldschema", lambda d: _edit_manifest(d, lambda m: m.pop("schema_version"))
        ),
    ),
    (
        "train-manifest-not-json",
        "manifest",
        lambda w: _broken_data_run(w, "manifest", lambda d: _edit_manifest(d, text="{not json")),
    ),
    (
        "train-warmup-corrupt",
        "warmup",
        lambda w: _broken_data_run(w, "warmup", lambda d: _write_parquet_garbage(d, "warmup.parquet")),
    ),
    (
        "train-round-corrupt",
        "round_1",
        lambda w: _broken_data_run(w, "round1", lambda d: _write_parquet_garbage(d, "round_1.parquet")),
    ),
    (
        "train-round-missing",
        "round_2",
        lambda w: _broken_data_run(w, "round2", lambda d: (d / "data" / "round_2.parquet").unlink()),
    ),
    (
        "train-round-no-messages",
        "messages",
        lambda w: _broken_data_run(
            w, "nomsg", lambda d: _rewrite_parquet(d, "round_1.parquet", [{"text": "a"}])
        ),
    ),
    (
        "train-round-empty",
        "round_1",
        lambda w: _broken_data_run(w, "emptyround", lambda d: _rewrite_parquet(d, "round_1.parquet", [])),
    ),
    (
        "train-round-messages-wrong",
        "messages",
        lambda w: _broken_data_run(
            w, "badmsg", lambda d: _rewrite_parquet(d, "round_1.parquet", [{"messages": "hello"}])
        ),
    ),
    (
        "train-output-a-file",
        "training.output_dir",
        lambda w: _train(w, {"training.output_dir": str(w.file("ckpt.txt", "x"))}, name="file"),
    ),
    (
        "train-output-user-folder",
        "training.output_dir",
        lambda w: _train(w, {"training.output_dir": str(w.user_folder("ckpts"))}, name="user"),
    ),
    (
        "train-output-the-data-run",
        "training.output_dir",
        lambda w: _train(w, {"training.output_dir": str(w.out)}, name="datarun"),
    ),
    (
        "train-epochs-zero",
        "training.num_train_epochs",
        lambda w: _train(w, {"training.num_train_epochs": 0}, name="num_train_epochs"),
    ),
    (
        "train-lr-negative",
        "training.learning_rate",
        lambda w: _train(w, {"training.learning_rate": -1}, name="lr"),
    ),
    (
        "train-batch-zero",
        "training.per_device_train_batch_size",
        lambda w: _train(w, {"training.per_device_train_batch_size": 0}, name="batch"),
    ),
    (
        "train-launcher-unknown",
        "training.launcher",
        lambda w: _train(w, {"training.launcher": "slurm"}, name="launcher"),
    ),
    (
        "train-both-precisions",
        "training",
        lambda w: _train(w, {"training.bf16": True, "training.fp16": True}, name="prec"),
    ),
    (
        "train-model-missing",
        "training.model",
        lambda w: _train(w, {"training.model": "./no/such/model"}, name="model"),
    ),
    # --- eval -----------------------------------------------------------------------------------
    (
        "eval-both-disabled",
        "both alpaca_eval and mt_bench are disabled",
        lambda w: _eval(
            w, {"evaluation.alpaca_eval.enabled": False, "evaluation.mt_bench.enabled": False}, name="off"
        ),
    ),
    (
        "eval-reference-missing",
        "evaluation.alpaca_eval.reference",
        lambda w: _eval(w, {"evaluation.alpaca_eval.reference": str(w.root / "none.json")}, name="ref"),
    ),
    (
        "eval-reference-not-utf8",
        "evaluation.alpaca_eval.reference",
        lambda w: _eval(
            w, {"evaluation.alpaca_eval.reference": str(w.file("ref.json", b"\xff\xfe[1]"))}, name="ref8"
        ),
    ),
    (
        "eval-reference-garbage",
        "evaluation.alpaca_eval.reference",
        lambda w: _eval(
            w, {"evaluation.alpaca_eval.reference": str(w.file("refg.json", "[{oops"))}, name="refg"
        ),
    ),
    (
        "eval-reference-wrong-shape",
        "evaluation.alpaca_eval.reference",
        lambda w: _eval(
            w,
            {"evaluation.alpaca_eval.reference": str(w.file("refs.json", json.dumps([{"question": "a"}])))},
            name="refs",
        ),
    ),
    (
        "eval-questions-missing",
        "evaluation.mt_bench.questions",
        lambda w: _eval(w, {"evaluation.mt_bench.questions": str(w.root / "none.jsonl")}, name="q"),
    ),
    (
        "eval-questions-garbage",
        "evaluation.mt_bench.questions",
        lambda w: _eval(w, {"evaluation.mt_bench.questions": str(w.file("q.jsonl", "{nope\n"))}, name="qg"),
    ),
    (
        "eval-questions-wrong-shape",
        "evaluation.mt_bench.questions",
        lambda w: _eval(
            w, {"evaluation.mt_bench.questions": str(w.file("qs.jsonl", _jsonl([{"id": 1}])))}, name="qs"
        ),
    ),
    (
        "eval-judge-prompts-missing",
        "evaluation.mt_bench.judge_prompts",
        lambda w: _eval(w, {"evaluation.mt_bench.judge_prompts": str(w.root / "none.jsonl")}, name="jp"),
    ),
    (
        "eval-difficulty-missing",
        "evaluation.alpaca_eval.difficulty",
        lambda w: _eval(w, {"evaluation.alpaca_eval.difficulty": str(w.root / "none.csv")}, name="diff"),
    ),
    (
        "eval-annotator-unknown",
        "evaluation.alpaca_eval.annotator",
        lambda w: _eval(w, {"evaluation.alpaca_eval.annotator": "nobody"}, name="ann"),
    ),
    (
        "eval-output-a-file",
        "evaluation.output_dir",
        lambda w: _eval(
            w,
            {"evaluation.output_dir": str(w.file("eval.txt", "x")), "evaluation.models": ["student"]},
            name="file",
        ),
    ),
    (
        "eval-output-user-folder",
        "evaluation.output_dir",
        lambda w: _eval(
            w,
            {"evaluation.output_dir": str(w.user_folder("evals")), "evaluation.models": ["student"]},
            name="user",
        ),
    ),
    (
        "eval-no-rounds-trained",
        "evaluation.models",
        lambda w: _eval(w, {"training.output_dir": str(w.root / "no-ckpts")}, name="norounds"),
    ),
    (
        "eval-model-folder-missing",
        "no/such/ckpt",
        lambda w: _cmd("eval", "--recipe", w.recipe, "--models", "./no/such/ckpt"),
    ),
    (
        "eval-published-unknown",
        "evaluation.published",
        lambda w: _eval(
            w, {"evaluation.published": ["no-such-model"], "evaluation.models": ["student"]}, name="pub"
        ),
    ),
    (
        "eval-limit-zero",
        "evaluation.alpaca_eval.limit",
        lambda w: _eval(w, {"evaluation.alpaca_eval.limit": 0}, name="limit"),
    ),
    # --- score-alpaca ---------------------------------------------------------------------------
    (
        "alpaca-file-missing",
        "--annotations",
        lambda w: _cmd("eval", "score-alpaca", "--annotations", w.root / "none.json"),
    ),
    ("alpaca-not-json", "--annotations", lambda w: _score_alpaca(w, "a1.json", "{oops")),
    ("alpaca-not-utf8", "--annotations", lambda w: _score_alpaca(w, "a2.json", b"\xff\xfe\x00garbage")),
    ("alpaca-object", "annotations", lambda w: _score_alpaca(w, "a3.json", json.dumps({"preference": 1}))),
    ("alpaca-empty-list", "annotations", lambda w: _score_alpaca(w, "a4.json", "[]")),
    (
        "alpaca-no-preference-column",
        "preference",
        lambda w: _score_alpaca(
            w,
            "a5.json",
            json.dumps(
                [
                    {
                        "instruction": "a",
                        "output_1": "b",
                        "output_2": "c",
                        "generator_1": "x",
                        "generator_2": "y",
                    }
                ]
            ),
        ),
    ),
    (
        "alpaca-all-nan",
        "none of its",
        lambda w: _score_alpaca(w, "a6.json", _alpaca([None] * 6).replace("null", "NaN")),
    ),
    ("alpaca-all-null", "none of its", lambda w: _score_alpaca(w, "a7.json", _alpaca([None] * 6))),
    (
        "alpaca-string-preference",
        "not a number",
        lambda w: _score_alpaca(w, "a8.json", _alpaca([1, 2, "two", 1, 2, 1])),
    ),
    (
        "alpaca-out-of-range-high",
        "outside",
        lambda w: _score_alpaca(w, "a9.json", _alpaca([1, 2, 3.5, 1, 2, 1])),
    ),
    (
        "alpaca-out-of-range-negative",
        "outside",
        lambda w: _score_alpaca(w, "a10.json", _alpaca([1, -1, 2, 1, 2, 1])),
    ),
    (
        "alpaca-out-of-range-between",
        "outside",
        lambda w: _score_alpaca(w, "a11.json", _alpaca([1, 0.5, 2, 1, 2, 1])),
    ),
    (
        "alpaca-list-preference",
        "not a number",
        lambda w: _score_alpaca(w, "a12.json", _alpaca([[2], 2, 1, 2, 1, 2])),
    ),
    (
        "alpaca-several-models",
        "several models",
        lambda w: _score_alpaca(
            w, "a13.json", _alpaca([1, 2, 1, 2, 1, 2]).replace('"generator_2": "m"', '"generator_2": "m2"', 1)
        ),
    ),
    (
        "alpaca-difficulty-missing",
        "difficulty",
        lambda w: _score_alpaca(
            w, "a14.json", _alpaca([1, 2, 1, 2, 1, 2, 1, 2]), "--difficulty", w.root / "none.csv"
        ),
    ),
    (
        "alpaca-difficulty-binary",
        "difficulty",
        lambda w: _score_alpaca(
            w,
            "a15.json",
            _alpaca([1, 2, 1, 2, 1, 2, 1, 2]),
            "--difficulty",
            w.file("d.csv", bytes(range(256))),
        ),
    ),
    (
        "alpaca-difficulty-wrong-columns",
        "difficulty",
        lambda w: _score_alpaca(
            w, "a16.json", _alpaca([1, 2, 1, 2, 1, 2, 1, 2]), "--difficulty", w.file("d2.csv", "a,b\n1,2\n")
        ),
    ),
    # --- score-mt-bench -------------------------------------------------------------------------
    (
        "mt-file-missing",
        "--judgments",
        lambda w: _cmd("eval", "score-mt-bench", "--judgments", w.root / "none.jsonl"),
    ),
    ("mt-not-jsonl", "--judgments", lambda w: _score_mt(w, "m1.jsonl", "{nope\n")),
    ("mt-not-utf8", "--judgments", lambda w: _score_mt(w, "m2.jsonl", b"\xff\xfe\x00\x01")),
    ("mt-empty", "has no records", lambda w: _score_mt(w, "m3.jsonl", "")),
    (
        "mt-no-question-id",
        "question_id",
        lambda w: _score_mt(w, "m4.jsonl", _jsonl([{"turn": 1, "judgment": "[[5]]"}])),
    ),
    (
        "mt-no-judgment-or-score",
        "neither",
        lambda w: _score_mt(w, "m5.jsonl", _jsonl([{"question_id": 81, "turn": 1}])),
    ),
    (
        "mt-score-text",
        "not a number",
        lambda w: _score_mt(w, "m6.jsonl", _judgments([{"score": 5}, {"score": "high"}])),
    ),
    (
        "mt-no-category-no-questions",
        "--questions",
        lambda w: _score_mt(w, "m7.jsonl", _jsonl([{"question_id": 81, "turn": 1, "judgment": "[[5]]"}])),
    ),
    (
        "mt-questions-missing",
        "--questions",
        lambda w: _score_mt(
            w,
            "m8.jsonl",
            _jsonl([{"question_id": 81, "turn": 1, "judgment": "[[5]]"}]),
            "--questions",
            w.root / "none.jsonl",
        ),
    ),
    (
        "mt-questions-garbage",
        "--questions",
        lambda w: _score_mt(
            w,
            "m9.jsonl",
            _jsonl([{"question_id": 81, "turn": 1, "judgment": "[[5]]"}]),
            "--questions",
            w.file("qq.jsonl", "{oops\n"),
        ),
    ),
    (
        "mt-questions-wrong-shape",
        "--questions",
        lambda w: _score_mt(
            w,
            "m10.jsonl",
            _jsonl([{"question_id": 81, "turn": 1, "judgment": "[[5]]"}]),
            "--questions",
            w.file("qw.jsonl", _jsonl([{"id": 81}])),
        ),
    ),
    (
        "mt-questions-lack-ids",
        "--questions",
        lambda w: _score_mt(
            w,
            "m11.jsonl",
            _jsonl([{"question_id": 99, "turn": 1, "judgment": "[[5]]"}]),
            "--questions",
            w.file("q81.jsonl", _jsonl([{"question_id": 81, "category": "writing"}])),
        ),
    ),
    # --- review ---------------------------------------------------------------------------------
    ("review-round-unknown", "review.round", lambda w: _review(w, "push", "--round", "99", "--dry-run")),
    ("review-round-text", "review.round", lambda w: _review(w, "push", "--round", "last", "--dry-run")),
    (
        "review-sample-zero",
        "review.sample_size",
        lambda w: _review(w, "push", "--sample-size", "0", "--dry-run"),
    ),
    (
        "review-no-data-run",
        "output_dir: no finished data run",
        lambda w: _review(
            w, "push", "--dry-run", recipe=w.variant("rv-nodata", {"output_dir": str(w.root / "nodata")})
        ),
    ),
    (
        "review-server-unreachable",
        "review.argilla",
        lambda w: _review(w, "push", env={"ARGILLA_API_KEY": "k"}),
    ),
    ("review-pull-unreachable", "review.argilla", lambda w: _review(w, "pull", env={"ARGILLA_API_KEY": "k"})),
    (
        "review-url-invalid",
        "review.argilla.api_url",
        lambda w: _review(
            w,
            "push",
            recipe=w.variant("rv-url", {"review.argilla.api_url": "http://[::1"}),
            env={"ARGILLA_API_KEY": "k"},
        ),
    ),
    (
        "review-output-a-file",
        "review.output_dir",
        lambda w: _review(
            w,
            "pull",
            recipe=w.variant("rv-file", {"review.output_dir": str(w.file("review.txt", "x"))}),
            env={"ARGILLA_API_KEY": "k"},
        ),
    ),
    (
        "review-output-user-folder",
        "review.output_dir",
        lambda w: _review(
            w,
            "pull",
            recipe=w.variant("rv-user", {"review.output_dir": str(w.user_folder("reviews"))}),
            env={"ARGILLA_API_KEY": "k"},
        ),
    ),
    # --- push -----------------------------------------------------------------------------------
    ("push-to-a-file", "--to", lambda w: _push(w, "--dry-run", "--to", w.file("push.txt", "x"))),
    (
        "push-to-user-folder",
        "--to",
        lambda w: _push(
            w, "--dry-run", "--to", w.user_folder("upload"), intact=[str(w.out), str(w.root / "upload")]
        ),
    ),
    ("push-to-the-data-run", "holds a tapir data run", lambda w: _push(w, "--dry-run", "--to", w.out)),
    ("push-round-unknown", "hub.round", lambda w: _push(w, "--dry-run", "--round", "99")),
    ("push-round-text", "hub.round", lambda w: _push(w, "--dry-run", "--round", "last")),
    (
        "push-repo-id-invalid",
        "hub.repo_id",
        lambda w: _push(w, "--repo-id", "no/such/repo", env={"HF_TOKEN": "hf_" + "x" * 30}),
    ),
    (
        "push-no-data-run",
        "no finished data run",
        lambda w: _push(
            w, "--dry-run", recipe=w.variant("push-nodata", {"output_dir": str(w.root / "nodata")})
        ),
    ),
    (
        "push-token-unset",
        "hub.token_env",
        lambda w: _push(
            w,
            "--repo-id",
            "org/name",
            recipe=w.variant("push-token", {"hub.token_env": "CORPUS_NO_TOKEN"}),
            env={"CORPUS_NO_TOKEN": None},
        ),
    ),
    (
        "push-incomplete-data",
        "is incomplete",
        lambda w: _push(
            w,
            "--dry-run",
            "--to",
            w.root / "upload-incomplete",
            recipe=w.variant("push-inc", {"output_dir": str(_incomplete_copy(w))}),
        ),
    ),
]


ISSUE_22_CASES: list[Case] = [
    # --- ownership by proof: what merely looks like an earlier run is not one ---------------------
    (
        "train-output-holds-a-recipe-yaml",
        "is not a tapir train folder",
        lambda w: (
            _train(
                w,
                {
                    "training.output_dir": str(
                        _user_files(
                            w, "looks-trained", {"recipe.yaml": "name: mine\n", "warmup/notes.md": "notes"}
                        )
                    )
                },
                name="legacy-train",
            )
            | {"intact": [str(w.out), str(w.root / "looks-trained")]}
        ),
    ),
    (
        "eval-output-holds-a-leaderboard",
        "is not a tapir eval folder",
        lambda w: (
            _eval(
                w,
                {
                    "evaluation.output_dir": str(
                        _user_files(w, "looks-evaluated", {"leaderboard.csv": "model\n"})
                    ),
                    "evaluation.models": ["student"],
                },
                name="legacy-eval",
            )
            | {"intact": [str(w.out), str(w.root / "looks-evaluated")]}
        ),
    ),
    (
        "data-output-a-user-file-inside-a-data-run",
        "holds files tapir did not write (notes.md)",
        lambda w: _data(
            w, None, "--output", _copy_with_notes(w), intact=[str(w.out), str(w.root / "data-with-notes")]
        ),
    ),
    (
        "train-seed-file-edited",
        "seeds.source:",
        lambda w: _cmd(
            "train",
            "--recipe",
            w.recipe,
            "--output",
            _edited_seeds_copy(w),
            intact=[str(w.out), str(w.root / "data-edited-seeds")],
        ),
    ),
    (
        "train-refused-leaves-no-folder",
        "the data is stale",
        lambda w: (
            _train(
                w,
                {
                    "curriculum.hard_share": [0.3, 0.9],
                    "training.output_dir": str(w.root / "new" / "nested" / "ckpts"),
                },
                name="nostub",
            )
            | {"intact": [str(w.out), str(w.root / "new")]}
        ),
    ),
    # --- recipe values that used to end in a traceback or a hang ------------------------------
    ("seed-above-32-bits", "seed", lambda w: _set(w, "seed=4294967296")),
    ("seed-negative", "seed", lambda w: _set(w, "seed=-1")),
    ("teacher-seed-above-32-bits", "teacher.seed", lambda w: _set(w, "teacher.seed=99999999999")),
    (
        "recipe-alias-bomb",
        "alias bomb",
        lambda w: _recipe_text(w, "bomb.yaml", _alias_bomb()),
    ),
    (
        "recipe-duplicate-key",
        "'teacher' is given twice",
        lambda w: _recipe_text(w, "dupkey.yaml", "name: dup\nteacher:\n  model: a\nteacher:\n  model: b\n"),
    ),
    ("set-alias-bomb", "--set description", lambda w: _set(w, "description=" + _alias_bomb(flow=True))),
    ("cache-dir-a-file", "cache_dir", lambda w: _set(w, f"cache_dir={w.file('cache.txt', 'x')}")),
    (
        "output-under-proc",
        "output_dir: cannot",
        lambda w: _data(w, None, "--output", "/proc/tapir-cannot-write-here/out"),
    ),
    # --- credentials written into a recipe --------------------------------------------------
    (
        "url-with-user-info",
        "teacher.base_url: holds a credential",
        lambda w: _data_with(w, "userinfo", w.endpoint("teacher", "http://me:s3cret-pw@127.0.0.1:9/v1")),
    ),
    (
        "options-api-key",
        "judge.options.api_key: holds a credential",
        lambda w: _data_with(w, "optkey", {"judge.options": {"api_key": "sk-planted-in-recipe"}}),
    ),
    (
        "sft-options-hub-token",
        "training.sft_options.hub_token: holds a credential",
        lambda w: _train(w, {"training.sft_options": {"hub_token": "hf_planted"}}, name="hubtoken"),
    ),
    # --- seed files -----------------------------------------------------------------------------
    (
        "seeds-lone-surrogate",
        "unpaired surrogate",
        lambda w: _seeds(
            w, "surrogate.jsonl", '{"instruction": "a"}\n{"instruction": "half \\ud800 a pair"}\n'
        ),
    ),
    (
        "seeds-zero-width-only",
        "empty",
        lambda w: _seeds(
            w, "zw.jsonl", _jsonl([{"instruction": "a"}, {"instruction": "\u200b\u200c\u2060\ufeff"}])
        ),
    ),
    (
        "seeds-ids-all-equal",
        "same id",
        lambda w: _seeds(
            w,
            "sameid.jsonl",
            _jsonl([{"instruction": f"q {i}", "uid": "x"} for i in range(3)]),
            id_column="uid",
        ),
    ),
    (
        "seeds-ids-null",
        "seeds.id_column",
        lambda w: _seeds(
            w,
            "nullid.jsonl",
            _jsonl([{"instruction": f"q {i}", "uid": None} for i in range(3)]),
            id_column="uid",
        ),
    ),
    (
        "round-size-larger-than-the-pool",
        "curriculum.round_size: round 2 would get no example",
        lambda w: _set(w, "curriculum.round_size=50"),
    ),
    # --- endpoints ------------------------------------------------------------------------------
    (
        "judge-without-logprobs",
        "judging.scoring: the judge at",
        lambda w: _data_with(
            w, "nologprobs", w.endpoint("judge", w.urls["nologprobs"]), env={"CORPUS_KEY": "k"}
        ),
    ),
    # --- eval -------------------------------------------------------------------------------------
    (
        "eval-round-never-trained",
        "round_7 is not a trained round",
        lambda w: _cmd("eval", "--recipe", w.recipe, "--models", "round_7"),
    ),
    (
        "eval-hub-id-offline",
        "neither a local folder nor a trained round",
        lambda w: _cmd("eval", "--recipe", w.recipe, "--models", "no-such-org/no-such-model"),
    ),
    (
        "eval-truncated-safetensors",
        "model.safetensors: truncated",
        lambda w: _cmd("eval", "--recipe", w.recipe, "--models", _truncated_checkpoint(w)),
    ),
    # --- stored scores ---------------------------------------------------------------------------
    (
        "alpaca-output-null",
        "output_2 is null",
        lambda w: _score_alpaca(
            w, "a17.json", _alpaca([1, 2, 1, 2]).replace('"model model model model "', "null", 1)
        ),
    ),
    (
        "mt-turn-3",
        "turn 3 is not 1 or 2",
        lambda w: _score_mt(w, "m12.jsonl", _judgments([{"score": 5, "turn": 3}])),
    ),
    ("mt-score-true", "not a number", lambda w: _score_mt(w, "m13.jsonl", _judgments([{"score": True}]))),
    (
        "mt-judged-five-times",
        "judged 5 times",
        lambda w: _score_mt(w, "m14.jsonl", _judgments([{"score": s} for s in (1, 9, 9, 9, 9)])),
    ),
]
# Probed beyond the issue's list: inputs of the same kinds that ended the same ways.
ISSUE_22_CASES += [
    (
        "recipe-nested-too-deep",
        "nested more than 32 levels",
        lambda w: _recipe_text(w, "deep.yaml", "name: deep\ndescription: " + "[" * 5000 + "]" * 5000 + "\n"),
    ),
    ("name-too-long", "name", lambda w: _set(w, "name=" + "n" * 300)),
    ("teacher-retries-huge", "teacher.max_retries", lambda w: _set(w, "teacher.max_retries=1000000")),
    ("teacher-timeout-huge", "teacher.timeout_s", lambda w: _set(w, "teacher.timeout_s=1e300")),
    (
        "endpoint-key-with-a-line-break",
        "teacher.api_key_env: the value of CORPUS_KEY holds",
        lambda w: _data_with(w, "keynl", w.endpoint("teacher", w.urls["sim"]), env={"CORPUS_KEY": "a\nb"}),
    ),
    (
        "cache-inside-the-output",
        "cache_dir:",
        lambda w: _data_with(
            w, "cacheinside", {"output_dir": str(w.root / "nest"), "cache_dir": str(w.root / "nest" / "c")}
        ),
    ),
    (
        "eval-empty-model-name",
        "an empty model name",
        lambda w: _cmd("eval", "--recipe", w.recipe, "--models", ""),
    ),
]
CASES += ISSUE_22_CASES


def _model_folder(w: World, name: str, files: dict[str, str | bytes]) -> Path:
    folder = w.root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = folder / relative
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def _fifo(w: World, name: str) -> Path:
    path = w.root / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.mkfifo(path)
    return path


def _swap_rounds(folder: Path) -> None:
    """Round 1's file replaced by another valid round file (round 2's): same shape, other rows."""
    data = folder / "data"
    (data / "round_1.parquet").write_bytes((data / "round_2.parquet").read_bytes())


_PAID = {"backend": "openai", "model": "gpt-x", "base_url": "https://api.example.invalid/v1"}

# Issue 34: secrets in any field, money without a price, a push of half a model, inputs that
# changed or repeat themselves, pipes, NUL bytes, impossible places.
ISSUE_34_CASES: list[Case] = [
    (
        "secret-url-query",
        "teacher.base_url: holds a credential (a URL with a credential in its query parameter 'api-key')",
        lambda w: _data_with(w, "urlkey", w.endpoint("teacher", w.urls["sim"] + "?api-key=planted-q-4711")),
    ),
    (
        "secret-url-query-google-key",
        "judge.base_url: holds a credential",
        lambda w: _data_with(w, "urlgkey", w.endpoint("judge", w.urls["sim"] + "?key=planted-g-4711")),
    ),
    (
        "secret-url-userinfo",
        "teacher.base_url: holds a credential (a URL with a credential in its user-info",
        lambda w: _data_with(w, "urluser", w.endpoint("teacher", "http://me:planted-p-4711@127.0.0.1:9/v1")),
    ),
    (
        "secret-header-hyphenated",
        "teacher.options.default_headers.api-key: holds a credential",
        lambda w: _data_with(
            w, "hdr1", {"teacher.options": {"default_headers": {"api-key": "planted-h-4711"}}}
        ),
    ),
    (
        "secret-header-x-api-key",
        "student.options.default_headers.X-API-Key",
        lambda w: _data_with(
            w, "hdr2", {"student.options": {"default_headers": {"X-API-Key": "planted-h-4712"}}}
        ),
    ),
    (
        "secret-header-subscription-key",
        "Ocp-Apim-Subscription-Key",
        lambda w: _data_with(
            w, "hdr3", {"judge.options": {"headers": {"Ocp-Apim-Subscription-Key": "planted-h-4713"}}}
        ),
    ),
    (
        "secret-deep-in-options",
        "teacher.options.a.b.c.Authorization",
        lambda w: _data_with(w, "deep", {"teacher.options": {"a": {"b": {"c": {"Authorization": "x y"}}}}}),
    ),
    (
        "secret-bearer-value",
        "a value shaped like a key or token",
        lambda w: _data_with(
            w, "bearer", {"teacher.options": {"headers": {"X-Custom": "Bearer abcdef0123456789abcd"}}}
        ),
    ),
    (
        "secret-eval-backend-options",
        "evaluation.backend_options.client.api_key",
        lambda w: _eval(w, {"evaluation.backend_options": {"client": {"api_key": "planted"}}}, name="sec"),
    ),
    (
        "secret-set-url-query",
        "teacher.base_url: holds a credential",
        lambda w: _set(w, "teacher.base_url=http://127.0.0.1:9/v1?access_token=planted-s-4711"),
    ),
    # --- money ------------------------------------------------------------------------------------
    (
        "price-without-output",
        "teacher.price_per_million_tokens: give both input and output",
        lambda w: _set(w, "teacher.price_per_million_tokens={input: 1}"),
    ),
    (
        "eval-price-without-input",
        "price_per_million_tokens: give both input and output",
        lambda w: _eval(w, {"evaluation.price_per_million_tokens": {"output": 2}}, name="price"),
    ),
    (
        "paid-unpriced-under-a-cap",
        "teacher.price_per_million_tokens: teacher is a paid endpoint (https://api.example.invalid/v1)",
        lambda w: _data_with(w, "paid", {"teacher": _PAID}, argv_extra=["--max-spend", "5"]),
    ),
    (
        "paid-unpriced-under-a-cap-dry-run",
        "teacher is a paid endpoint",
        lambda w: _data_with(w, "paiddry", {"teacher": _PAID}, argv_extra=["--max-spend", "5", "--dry-run"]),
    ),
    (
        "batch-unpriced-under-a-cap",
        "judge is a paid endpoint (Batch API)",
        lambda w: _data_with(w, "batchpaid", {"judge.batch": True}, argv_extra=["--max-spend", "5"]),
    ),
    # --- push what is whole -----------------------------------------------------------------------
    ("push-model-empty", "--model: empty", lambda w: _push(w, "--dry-run", "--model", "")),
    (
        "push-model-no-weights",
        "no weight files",
        lambda w: _push(
            w,
            "--dry-run",
            "--model",
            _model_folder(w, "noweights", {"config.json": '{"model_type": "gpt2"}'}),
        ),
    ),
    (
        "push-model-truncated-config",
        "config.json: unreadable",
        lambda w: _push(
            w,
            "--dry-run",
            "--model",
            _model_folder(w, "cutconfig", {"config.json": '{"model_ty', "model.safetensors": b"\0" * 16}),
        ),
    ),
    (
        "push-model-missing-shard",
        "names 1 shard(s) that are not there (model-00002-of-00002.safetensors",
        lambda w: _push(
            w,
            "--dry-run",
            "--model",
            _model_folder(
                w,
                "shards",
                {
                    "config.json": '{"model_type": "gpt2"}',
                    "model.safetensors.index.json": json.dumps(
                        {
                            "weight_map": {
                                "a": "model-00001-of-00002.safetensors",
                                "b": "model-00002-of-00002.safetensors",
                            }
                        }
                    ),
                    "model-00001-of-00002.safetensors": b"\x02\0\0\0\0\0\0\0{}",
                },
            ),
        ),
    ),
    (
        "push-model-empty-weights",
        "empty (0 bytes)",
        lambda w: _push(
            w,
            "--dry-run",
            "--model",
            _model_folder(w, "zero", {"config.json": '{"model_type": "gpt2"}', "model.safetensors": b""}),
        ),
    ),
    # --- inputs verified --------------------------------------------------------------------------
    (
        "train-round-replaced-by-another-valid-file",
        "round_1.parquet: changed since `tapir data` wrote it",
        lambda w: _broken_data_run(w, "swapped", _swap_rounds),
    ),
    (
        "seeds-combining-marks-only",
        "has an empty 'instruction'",
        lambda w: _seeds(w, "marks.jsonl", _jsonl([{"instruction": "\u0301\u0302\u20dd"}])),
    ),
    (
        "seeds-duplicate-key",
        "line 1: key 'instruction' appears twice",
        lambda w: _seeds(w, "dupkey.jsonl", '{"instruction": "a", "instruction": "b"}\n'),
    ),
    (
        "seeds-duplicate-key-array",
        "key 'instruction' appears twice",
        lambda w: _seeds(w, "dupkey.json", '[{"instruction": "a", "instruction": "b"}]'),
    ),
    (
        "seeds-a-pipe",
        "is a pipe or device, not a file",
        lambda w: _data_with(w, "fifo", {"seeds.source": str(_fifo(w, "seeds-pipe.jsonl"))}),
    ),
    (
        "mt-score-true-among-numbers",
        "line 2: score True is not a number",
        lambda w: _score_mt(
            w, "m20.jsonl", _judgments([{"score": 5, "question_id": 81}, {"score": True, "question_id": 82}])
        ),
    ),
    (
        "mt-duplicate-key",
        "key 'score' appears twice",
        lambda w: _score_mt(w, "m21.jsonl", '{"question_id": 81, "turn": 1, "score": 2, "score": 9}\n'),
    ),
    # --- one line, never a traceback --------------------------------------------------------------
    (
        "recipe-nul-in-name",
        "name: holds a NUL byte",
        lambda w: _recipe_text(w, "nul.yaml", 'name: "a\\0b"\n'),
    ),
    ("set-nul-in-output", "output_dir: holds a NUL byte", lambda w: _set(w, "output_dir=out\x00put")),
    ("recipe-path-nul", "NUL byte", lambda w: _cmd("data", "--recipe", "re\x00cipe.yaml")),
    (
        "init-under-a-file",
        "a part of the path is a file",
        lambda w: _cmd("init", "--to", str(w.file("plainfile", "x")) + "/default.yaml"),
    ),
    ("init-in-proc", "init:", lambda w: _cmd("init", "--to", "/proc/tapir-default.yaml")),
    # a file that exists but cannot be read (as root, permissions never stop a read: /proc's memory
    # file answers every read with EIO)
    (
        "recipe-unreadable",
        "/proc/self/mem: cannot read it",
        lambda w: _cmd("data", "--recipe", "/proc/self/mem"),
    ),
    (
        "batch-upload-refused-for-good",
        "judge: batch API refused: upload the batch file: HTTP 413",
        lambda w: _data_with(
            w,
            "batch413",
            {  # another model name: nothing of it is in the response cache, so it is asked
                "judge.model": "judge-in-batches",
                "judge.batch": True,
                "judge.options": {"batch_refuse_files": 413, "batch_delay_s": 0.05},
            },
        ),
    ),
    ("output-empty", "--output: empty", lambda w: _data(w, None, "--output", "")),
    ("push-to-empty", "--to: empty", lambda w: _push(w, "--dry-run", "--to", " ")),
    (
        "train-wait-not-a-number",
        "--wait-s: nan is not a number",
        lambda w: _cmd("train", "--recipe", w.recipe, "--machine-rank", "1", "--wait-s", "nan"),
    ),
    (
        "eval-model-nul",
        "--models: holds a NUL byte",
        lambda w: _cmd("eval", "--recipe", w.recipe, "--models", "a\x00b"),
    ),
    (
        "alpaca-duplicate-key",
        "key 'preference' appears twice",
        lambda w: _score_alpaca(
            w, "a30.json", _alpaca([1, 2]).replace('"preference": 1', '"preference": 1, "preference": 2', 1)
        ),
    ),
    (
        "train-model-hub-id-offline",
        "training.model: 'nosuchorg/nosuchmodel' is not a local folder and cannot be loaded",
        lambda w: _train(w, {"training.model": "nosuchorg/nosuchmodel"}, name="hubid"),
    ),
]
CASES += ISSUE_34_CASES


def _user_files(w: World, name: str, files: dict[str, str]) -> Path:
    folder = w.root / name
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


def _copy_with_notes(w: World) -> Path:
    import shutil

    copy = w.root / "data-with-notes"
    if not copy.exists():
        shutil.copytree(w.out, copy)
        (copy / "notes.md").write_text("the user's notes, kept in the run folder")
    return copy


def _edited_seeds_copy(w: World) -> Path:
    """A copy of the good data run whose seed file (its own copy) was edited after the run."""
    import shutil

    copy = w.root / "data-edited-seeds"
    if not copy.exists():
        shutil.copytree(w.out, copy)
        seeds = w.file(
            "seeds-edited.jsonl", Path(w.base["seeds"]["source"]).read_text() + '{"instruction": "new"}\n'
        )
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["inputs"]["seeds.source"]["path"] = str(seeds)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        seeds.write_text(seeds.read_text().replace("topic 0", "topic zero"))  # edited after the run
    return copy


def _truncated_checkpoint(w: World) -> Path:
    """A model folder whose weights were cut short (a copy that ran out of disk)."""
    import struct

    folder = w.root / "truncated-ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    header = json.dumps({"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
    return folder


def _alias_bomb(flow: bool = False) -> str:
    """The "billion laughs" of YAML: nine levels of nine aliases each."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{','.join(['*' + previous] * 9)}]")
    body = "\n".join(lines)
    if flow:
        return "{" + ", ".join(lines) + "}"
    return "name: bomb\n" + body + "\n"


def _marked(w: World, name: str, stage: str) -> Path:
    from tapir.staging import mark_output

    folder = w.root / name
    mark_output(folder, stage)
    (folder / "weights.bin").write_bytes(b"\0" * 16)
    return folder


def _incomplete_copy(w: World) -> Path:
    import shutil

    copy = w.root / "data-incomplete-push"
    if not copy.exists():
        shutil.copytree(w.out, copy)
        _edit_manifest(copy, lambda m: m.update(failed_calls=2))
    return copy


class _Fixed(BaseHTTPRequestHandler):
    """An endpoint that answers every path with one status and body (404s, HTML pages)."""

    status, body, kind = 404, b'{"detail": "Not Found"}', "application/json"

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.kind)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


class _ListsModelsOnly(_Fixed):
    """Lists models like an OpenAI endpoint, but answers chat requests with ``status``/``body``."""

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "sim", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(status: int, body: bytes, kind: str, base: type = _Fixed) -> ThreadingHTTPServer:
    handler = type("Handler", (base,), {"status": status, "body": body, "kind": kind})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# session, not module: xdist may hand the worker another module's test between two cases, and
# a module fixture would then run the whole corpus again
@pytest.fixture(scope="session")
def results(tmp_path_factory, shared_data_module):
    from .test_fault_injection import BENCH

    root = tmp_path_factory.mktemp("corpus")
    not_found = _serve(404, b'{"detail": "Not Found"}', "application/json")
    html = _serve(200, b"<html>login page</html>", "text/html")
    chat_404 = _serve(404, b'{"detail": "Not Found"}', "application/json", _ListsModelsOnly)
    chat_html = _serve(200, b"<html>sign in</html>", "text/html", _ListsModelsOnly)
    port = BENCH.free_port()
    simulator = BENCH.start_simulator(port, 0, {"api_key": SIM_KEY, "models": "sim"}, root / "simulator.log")
    bare_port = BENCH.free_port()  # a judge server that ignores `logprobs`
    bare = BENCH.start_simulator(bare_port, 0, {"no_logprobs": True}, root / "simulator-bare.log")
    urls = {
        "404": f"http://127.0.0.1:{not_found.server_port}/v1",
        "html": f"http://127.0.0.1:{html.server_port}/v1",
        "sim": f"http://127.0.0.1:{port}/v1",
        "closed": f"http://127.0.0.1:{BENCH.free_port()}/v1",
        "chat404": f"http://127.0.0.1:{chat_404.server_port}/v1",
        "chathtml": f"http://127.0.0.1:{chat_html.server_port}/v1",
        "nologprobs": f"http://127.0.0.1:{bare_port}/v1",
    }
    try:
        world = World(root, urls)
        good = subprocess.run(
            [sys.executable, "-m", "tapir.cli", "data", "--recipe", str(world.recipe)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )
        assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
        cases = []
        for case_id, _, make in CASES:
            case = make(world)
            case.setdefault("intact", [str(world.out)])
            cases.append({"id": case_id, **case})
        (root / "cases.json").write_text(json.dumps(cases, indent=1))
        driver = subprocess.run(
            [sys.executable, "-m", "tests.cli_cases", str(root / "cases.json"), str(root / "results.json")],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=1200,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
        return json.loads((root / "results.json").read_text())
    finally:
        simulator.terminate()
        bare.terminate()
        for server in (not_found, html, chat_404, chat_html):
            server.shutdown()


@pytest.fixture(scope="session")
def shared_data_module():
    if not (SHARED_DATA / "mt_bench" / "question.jsonl").is_file():
        pytest.fail(f"shared data missing: {SHARED_DATA}")
    return SHARED_DATA


def test_the_corpus_is_large_and_covers_every_verb():
    assert len(CASES) >= 120 and len({c[0] for c in CASES}) == len(CASES)
    verbs = {c[0].split("-")[0] for c in CASES}
    assert {"train", "eval", "alpaca", "mt", "review", "push", "seeds", "recipe"} <= verbs


@pytest.mark.parametrize(("case_id", "expected"), [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_naming_it(results, case_id, expected):
    result = results[case_id]
    assert result["traceback"] is None, result["traceback"]
    assert "Traceback" not in result["stderr"] + result["stdout"], result["stderr"][-2000:]
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert result["code"] == 2 and len(lines) == 1, (result["code"], result["stderr"][-2000:])
    assert lines[0].startswith("tapir: error: ") and expected in lines[0], lines[0]
    assert all(result["intact"].values()), result["intact"]  # earlier outputs untouched
