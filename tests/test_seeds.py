import json
from collections import Counter

import pytest

from tapir.errors import DataError
from tapir.pipelines.seeds import count_seeds_offline, embedded_seed_path, load_seeds
from tapir.recipe import EASYDISTILL_TAXONOMY, SeedSource


def test_real_self_instruct_seeds_load_with_their_inputs(shared_data):
    path = shared_data / "seed" / "self_instruct_seed_tasks.jsonl"
    seeds = load_seeds(SeedSource(source=str(path), shuffle=False), seed=0)
    assert len(seeds) == 175
    assert all(s["instruction"] for s in seeds)
    assert sum(1 for s in seeds if s["input"]) > 50  # taken from instances[0].input
    assert len({s["id"] for s in seeds}) == 175


def test_embedded_pool_covers_the_taxonomy():
    rows = [json.loads(line) for line in embedded_seed_path().read_text().splitlines()]
    assert len(rows) >= 230
    assert set(Counter(r["reference_task"] for r in rows)) == set(EASYDISTILL_TAXONOMY)
    seeds = load_seeds(SeedSource(), seed=0)
    assert len(seeds) == len(rows)


def test_limit_and_shuffle_are_seeded():
    a = load_seeds(SeedSource(limit=10), seed=1)
    assert a == load_seeds(SeedSource(limit=10), seed=1)
    assert a != load_seeds(SeedSource(limit=10), seed=2)
    assert len(a) == 10


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    ("rows", "column", "message"),
    [
        ([{"prompt": "hi there"}], "instruction", "seeds.instruction_column: column 'instruction' not in"),
        ([{"instruction": "Say hi."}, {"instruction": "  "}], "instruction", "row 1 of"),
        ([{"instruction": "Say hi."}, {"instruction": None}], "instruction", "has an empty 'instruction'"),
        ([{"instruction": "Say hi."}, {"instruction": "say   HI."}], "instruction", "rows 0 and 1"),
    ],
)
def test_bad_seed_files_fail_naming_the_problem(tmp_path, rows, column, message):
    source = SeedSource(source=write_jsonl(tmp_path / "s.jsonl", rows), instruction_column=column)
    with pytest.raises(DataError, match=message):
        load_seeds(source, seed=0)


def test_same_instruction_with_different_inputs_is_not_a_duplicate(tmp_path):
    rows = [{"instruction": "Translate.", "input": "cat"}, {"instruction": "Translate.", "input": "dog"}]
    assert len(load_seeds(SeedSource(source=write_jsonl(tmp_path / "s.jsonl", rows)), seed=0)) == 2


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="seeds.source: file not found"):
        load_seeds(SeedSource(source=str(tmp_path / "none.jsonl")), seed=0)
    (tmp_path / "s.csv").write_text("instruction\nhi\n")
    with pytest.raises(DataError, match="unsupported format"):
        load_seeds(SeedSource(source=str(tmp_path / "s.csv")), seed=0)


def test_parquet_seeds(tmp_path):
    import datasets

    path = tmp_path / "s.parquet"
    datasets.Dataset.from_list(
        [{"q": "Name a colour.", "id": "a"}, {"q": "Name a fruit.", "id": "b"}]
    ).to_parquet(str(path))
    seeds = load_seeds(
        SeedSource(source=str(path), instruction_column="q", id_column="id", input_column=None), 0
    )
    assert sorted(s["id"] for s in seeds) == ["a", "b"]


def test_offline_count_for_hub_sources_uses_expected_rows():
    assert count_seeds_offline(SeedSource(source="tatsu-lab/alpaca", expected_rows=52002)) == (
        52002,
        "from seeds.expected_rows",
    )
    assert (
        count_seeds_offline(SeedSource(source="tatsu-lab/alpaca", expected_rows=52002, limit=100))[0] == 100
    )
    assert count_seeds_offline(SeedSource(source="tatsu-lab/alpaca"))[0] is None


def test_malformed_json_lines_are_located(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "Say hi."}\n{"instruction": \n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_seeds(SeedSource(source=str(path)), seed=0)
    array = tmp_path / "s.json"
    array.write_text('[{"instruction": "Name a colour."}, {"instruction": "Name a fruit."}]')
    assert len(load_seeds(SeedSource(source=str(array)), seed=0)) == 2


def _file(tmp_path, rows, name="s.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_instruction_of_invisible_characters_is_empty(tmp_path):
    path = _file(tmp_path, [{"instruction": "ok"}, {"instruction": "\u200b\u2060\ufeff \u3164"}])
    with pytest.raises(DataError, match=r"row 1 of .* has an empty 'instruction'"):
        load_seeds(SeedSource(source=str(path)), seed=0)
    path = _file(tmp_path, [{"instruction": "\u200bHello"}, {"instruction": "日本語"}], "fine.jsonl")
    assert len(load_seeds(SeedSource(source=str(path)), seed=0)) == 2  # visible text among them: kept


def test_a_lone_surrogate_is_one_line_not_a_traceback(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "fine"}\n{"instruction": "half \\ud800 a pair"}\n')
    with pytest.raises(DataError, match=r"row 1 of .* holds an unpaired surrogate"):
        load_seeds(SeedSource(source=str(path)), seed=0)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["a", "a", "b"], "rows 0 and 1 of .* have the same id 'a'"),
        ([None, None], "has empty 'uid'"),
        ([1, "1"], "same id '1'"),
        ([["x"], "y"], "has a list 'uid'"),
    ],
)
def test_seed_ids_are_present_and_unique(tmp_path, ids, expected):
    path = _file(tmp_path, [{"instruction": f"q {n}", "uid": i} for n, i in enumerate(ids)])
    with pytest.raises(DataError, match=f"^seeds.id_column: .*{expected}"):
        load_seeds(SeedSource(source=str(path), id_column="uid"), seed=0)
