from pathlib import Path

import pytest

from tapir.errors import RecipeError
from tapir.recipe import (
    EASYDISTILL_TAXONOMY,
    Recipe,
    field_reference,
    load_recipe,
    read_yaml,
    recipe_from_dict,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["default.yaml", "paper-llama2-7b.yaml"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(REPO / "recipes" / name)
    assert recipe.curriculum.rounds == len(recipe.curriculum.hard_share)
    assert abs(sum(recipe.taxonomy.normalised_mix().values()) - 1) < 1e-9


def test_easydistill_defaults_have_32_labels_and_up_weight_math():
    recipe = Recipe(name="x")
    assert len(recipe.taxonomy.labels) == 32 == len(EASYDISTILL_TAXONOMY)
    mix = recipe.taxonomy.normalised_mix()
    assert mix["Math"] > mix["Code Generation"] > mix["History"] > 0


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nteacher:\n  modle: gpt-4o\n", "teacher.modle: unknown field"),
        ("name: x\ncurriculum:\n  rounds: three\n", "curriculum.rounds"),
        ("name: x\njudge:\n  backend: ollama\n", "judge.backend"),
        (
            "name: x\ncurriculum:\n  rounds: 2\n  hard_share: [0.5]\n",
            "hard_share: has 1 values but rounds is 2",
        ),
        (
            "name: x\ntaxonomy:\n  target_mix: {Math: 0.5, Maths: 0.5}\n",
            "target_mix: unknown labels ['Maths']",
        ),
        ("name: x\ntaxonomy:\n  target_mix: {Math: 0.5}\n", "shares sum to 0.500"),
        ("name: x\nrefinement:\n  prompts: {Poetry: refine_writing}\n", "refinement.prompts"),
        ("teacher: {}\n", "name: Field required"),
        ("name: a b\n", "name:"),
        ("name: x\ncurriculum: [1, 2]\n", "curriculum"),
    ],
)
def test_invalid_recipes_name_the_field(tmp_path, text, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, text))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_bad_yaml_reports_line(tmp_path):
    with pytest.raises(RecipeError, match=r"invalid YAML \(line 2, column 7\)"):
        load_recipe(write(tmp_path, "name: x\nseed: : 3\n"))


def test_missing_and_empty_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="recipe is empty"):
        load_recipe(write(tmp_path, ""))


def test_overrides_go_through_the_same_schema(tmp_path):
    path = write(tmp_path, "name: x\n")
    recipe = load_recipe(
        path,
        [
            "judge.model=gpt-4o",
            "judge.backend=openai",
            "curriculum.rounds=2",
            "curriculum.hard_share=[0.2, 0.7]",
        ],
    )
    assert recipe.judge.model == "gpt-4o" and recipe.judge.backend == "openai"
    assert recipe.curriculum.rounds == 2 and recipe.curriculum.hard_share == [0.2, 0.7]
    with pytest.raises(RecipeError, match="judge.modl: unknown field"):
        load_recipe(path, ["judge.modl=gpt-4o"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(path, ["judge.model"])
    with pytest.raises(RecipeError, match="difficulty.delta"):
        load_recipe(path, ["difficulty.delta=high"])


def test_fingerprint_changes_with_any_knob():
    a = recipe_from_dict({"name": "x"})
    b = recipe_from_dict({"name": "x", "difficulty": {"delta": 2.0}})
    assert a.fingerprint() == recipe_from_dict({"name": "x"}).fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_field_reference_documents_every_knob():
    names = {name for name, _, _ in field_reference()}
    assert {"difficulty.delta", "curriculum.hard_share", "taxonomy.target_mix", "judge.backend"} <= names
    described = {name: text for name, _, text in field_reference()}
    assert described["difficulty.delta"]


def test_yaml_anchors_are_fine_but_an_alias_bomb_is_refused_at_once(tmp_path):
    import time

    shared = "name: x\nteacher: &m\n  model: a.gguf\nstudent: *m\n"
    assert load_recipe(write(tmp_path, shared)).student.model == "a.gguf"  # aliases people use work
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{c}: &{c} [{','.join(['*' + chr(ord(c) - 1)] * 9)}]" for c in "bcdefghi"]
    started = time.perf_counter()
    with pytest.raises(RecipeError, match="alias bomb"):
        load_recipe(write(tmp_path, "name: x\n" + "\n".join(levels) + "\n"))
    assert time.perf_counter() - started < 10  # counted, never expanded (9^9 values)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    with pytest.raises(RecipeError, match=r"line 4, column 1\): key 'judge' is given twice"):
        load_recipe(write(tmp_path, "name: x\njudge:\n  model: a\njudge:\n  model: b\n"))
    merged = "name: x\nbase: &b {model: a, seed: 3}\n"  # a merge key overriding a merged value is fine
    assert read_yaml(merged + "t:\n  <<: *b\n  model: c\n")["t"] == {"model": "c", "seed": 3}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["teacher.base_url=http://me:pw@host:8000/v1"], "teacher.base_url"),
        (["judge.options={api_key: sk-123}"], "judge.options.api_key"),
        (["student.options={password: hunter2}"], "student.options.password"),
        (["training.sft_options={hub_token: hf_abc}"], "training.sft_options.hub_token"),
        (["review.argilla.api_url=https://u:p@argilla.example/"], "review.argilla.api_url"),
        (["teacher.base_url=http://host:8000/v1?api-key=hunter2"], "teacher.base_url"),
        (["teacher.base_url=http://host:8000/v1?x=1&key=hunter2"], "teacher.base_url"),
        (["judge.base_url=https://host/v1?sig=hunter2"], "judge.base_url"),
        (["judge.options={default_headers: {api-key: hunter2}}"], "judge.options.default_headers.api-key"),
        (["student.options={headers: {X-Api-Key: hunter2}}"], "student.options.headers.X-Api-Key"),
        (
            ["student.options={a: [{b: {Proxy-Authorization: hunter2}}]}"],
            "student.options.a.0.b.Proxy-Authorization",
        ),
        (["teacher.options={cookie: hunter2}"], "teacher.options.cookie"),
        (
            ["teacher.options={headers: {X-Id: 'Bearer hunter2hunter2hunter2'}}"],
            "teacher.options.headers.X-Id",
        ),
        (["evaluation.backend_options={api_key: hunter2}"], "evaluation.backend_options.api_key"),
        (["training.rescore_options={client_secret: hunter2}"], "training.rescore_options.client_secret"),
    ],
)
def test_a_credential_written_into_the_recipe_is_refused_not_copied(tmp_path, overrides, field):
    path = write(tmp_path, "name: x\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path, overrides)
    message = str(error.value)
    assert f"{field}: holds a credential" in message and "environment variable" in message
    assert not any(secret in message for secret in ("pw@", "sk-123", "hunter2", "hf_abc", "u:p@"))


def test_the_scrubber_knows_credentials_by_where_they_stand():
    from tapir.manifest import scrub

    text = (
        "GET http://u:pass1234@h/v1?api-key=k1k1k1&model=m https://h/v1?key=k2k2k2#x "
        "Authorization: Bearer tok3tok3tok3tok3tok3 headers={'X-API-Key': 'k4k4k4'} api_key=\"k5k5k5\""
    )
    clean = scrub(text)
    assert not any(s in clean for s in ("pass1234", "k1k1k1", "k2k2k2", "tok3tok3", "k4k4k4", "k5k5k5"))
    assert "model=m" in clean and "http://***@h/v1" in clean
    prose = "A basic understanding of the token budget; judge.options.api_key: holds a credential."
    assert scrub(prose) == prose


def test_names_that_merely_contain_token_are_not_credentials(tmp_path):
    path = write(tmp_path, "name: x\n")
    recipe = load_recipe(path, ["training.sft_options={eos_token: '</s>'}", "judging.top_logprobs=5"])
    assert recipe.training.sft_options == {"eos_token": "</s>"}


@pytest.mark.parametrize("value", ["4294967296", "-1"])
def test_seeds_stay_in_numpy_s_range(tmp_path, value):
    with pytest.raises(RecipeError, match="seed"):
        load_recipe(write(tmp_path, "name: x\n"), [f"seed={value}"])
    assert load_recipe(write(tmp_path, "name: x\n"), ["seed=4294967295"]).seed == 2**32 - 1


def test_every_recipe_field_is_described_and_the_reference_page_is_current():
    import importlib.util

    from tapir.recipe import field_reference

    undescribed = [name for name, _, description in field_reference() if not description.strip()]
    assert undescribed == []
    spec = importlib.util.spec_from_file_location("recipe_reference", REPO / "tools" / "recipe_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE.read_text(encoding="utf-8") == module.render(), (
        "docs/reference/recipe.md is stale: run python tools/recipe_reference.py"
    )


def test_a_judge_budget_or_temperature_that_would_change_nothing_is_refused():
    with pytest.raises(RecipeError, match=r"judge\.generation: max_new_tokens would have no effect"):
        recipe_from_dict({"name": "x", "judge": {"generation": {"max_new_tokens": 64}}})
    kept = recipe_from_dict({"name": "x", "judge": {"generation": {"top_p": 0.9}}})  # sent with every grade
    assert kept.judge.generation.top_p == 0.9


def test_mt_bench_grades_are_expected_through_a_judge_tapir_serves_and_written_from_an_endpoint():
    served = recipe_from_dict({"name": "x", "judge": {"backend": "llamacpp", "model": "embedded"}})
    assert served.mt_bench_scoring == "expected"
    endpoint = {"backend": "openai", "model": "gpt-4", "api_key_env": "OPENAI_API_KEY"}
    assert recipe_from_dict({"name": "x", "evaluation": {"judge": endpoint}}).mt_bench_scoring == "written"
    forced = {"name": "x", "evaluation": {"mt_bench": {"scoring": "written"}}}
    assert recipe_from_dict(forced).mt_bench_scoring == "written"
    in_process = {
        "name": "x",
        "judging": {"scoring": "sampled"},
        "judge": {"backend": "transformers", "model": "./judge"},
        "evaluation": {"mt_bench": {"scoring": "expected"}},
    }
    with pytest.raises(RecipeError, match=r"evaluation.mt_bench.scoring: expected needs log-probabilities"):
        recipe_from_dict(in_process)
