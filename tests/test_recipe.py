from pathlib import Path

import pytest

from tapir.errors import RecipeError
from tapir.recipe import EASYDISTILL_TAXONOMY, Recipe, field_reference, load_recipe, recipe_from_dict

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
