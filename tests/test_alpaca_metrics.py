"""AlpacaEval 2.0 scoring from the real stored annotations of 15 models (../shared/data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapir.errors import DataError
from tapir.evaluation import alpaca_metrics

from .conftest import SHARED_DATA

ALPACA = SHARED_DATA / "alpaca_eval"
ANNOTATIONS = ALPACA / "annotations"
#: gpt4_gamed is itself a "gamed" output set: its published LC leans on alpaca_eval's
#: regularisation towards the two gamed baselines, whose annotations are not available offline.
GAMED = {"gpt4_gamed"}
pytestmark = pytest.mark.xdist_group("alpaca-scored")


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return pd.read_csv(ALPACA / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv", index_col=0)


@pytest.fixture(scope="session")  # fits 15 models' LC models: once, on the group's worker
def scored(tmp_path_factory) -> dict[str, dict]:
    cache = tmp_path_factory.mktemp("cache")
    return {
        path.stem: alpaca_metrics.score(alpaca_metrics.load_annotations(path), ANNOTATIONS, cache)
        for path in sorted(ANNOTATIONS.glob("*.json"))
    }


def test_win_rate_reproduces_every_published_row_exactly(scored, published):
    assert len(scored) == 15
    for name, metrics in scored.items():
        row = published.loc[name]
        assert metrics["win_rate"] == pytest.approx(row["win_rate"], abs=1e-6), name
        assert metrics["standard_error"] == pytest.approx(row["standard_error"], abs=1e-6), name
        assert metrics["n_total"] == row["n_total"], name


def test_offline_lc_win_rate_leave_one_out_stays_near_published(scored, published):
    """Each model's difficulty estimate leaves its own annotations out (scored out of sample);
    benchmarks/offline_lc.py prints the table the README quotes."""
    deviation = {
        name: metrics["length_controlled_winrate"] - published.loc[name, "length_controlled_winrate"]
        for name, metrics in scored.items()
    }
    print(json.dumps({k: round(v, 2) for k, v in deviation.items()}, indent=1))
    honest = {name: value for name, value in deviation.items() if name not in GAMED}
    for name, value in honest.items():
        assert scored[name]["lc_method"].endswith(f"leaving out {name}"), scored[name]["lc_method"]
        assert abs(value) < 5.0, (name, value)
        assert not scored[name]["lc_extreme_change"], name
    assert float(np.median([abs(v) for v in honest.values()])) < 1.0
    assert sum(abs(v) <= 1.0 for v in honest.values()) >= 10

    # The estimate is informative: far closer than the raw win rate on length-biased models.
    assert abs(deviation["gpt-3.5-turbo-1106"]) < abs(
        scored["gpt-3.5-turbo-1106"]["win_rate"]
        - published.loc["gpt-3.5-turbo-1106", "length_controlled_winrate"]
    )


def _official_like_files(tmp_path: Path) -> tuple[Path, Path]:
    """df_gamed.csv and instruction_difficulty.csv in alpaca_eval's layouts: two models stand in
    for the gamed baselines (the real ones are not available offline)."""
    reference = pd.read_json(ALPACA / "alpaca_eval_gpt4_1106_preview_reference.json")
    difficulty = alpaca_metrics.estimate_difficulty(sorted(ANNOTATIONS.glob("*.json"))[:6])
    per_index = reference["instruction"].map(difficulty).to_numpy()
    frames = []
    for name in ("gpt-3.5-turbo-1106_concise", "alpaca-7b_verbose"):
        df = pd.read_json(ANNOTATIONS / f"{name}.json")
        df = df.set_index(df["instruction"].map({i: n for n, i in enumerate(reference["instruction"])}))
        df = df.sort_index()
        delta = df["output_1"].str.len() - df["output_2"].str.len()
        frames.append(
            pd.DataFrame(
                {
                    "model": name,
                    "index": df.index,
                    "preference": df["preference"] - 1,
                    "std_delta_len": delta / delta.std(),
                    "instruction_difficulty": per_index[df.index],
                    "not_gamed_baseline": False,
                }
            )
        )
    gamed = tmp_path / "df_gamed.csv"
    # alpaca_eval reads the difficulty of index g from row g: the first model covers all 805 in order.
    pd.concat(frames).to_csv(gamed, index=False)
    plain = tmp_path / "instruction_difficulty.csv"
    pd.DataFrame({"instruction_difficulty": per_index}).to_csv(plain)
    return gamed, plain


def _alpaca_eval_own(annotations: pd.DataFrame, df_gamed: Path, glm_name: str) -> float:
    import alpaca_eval.metrics.glm_winrate as glm

    original = glm.hf_hub_download
    glm.hf_hub_download = lambda **kwargs: str(df_gamed)
    try:
        return glm.get_length_controlled_winrate(
            annotations.copy(), glm_name=glm_name, save_weights_dir=None, is_warn_extreme_changes=False
        )["length_controlled_winrate"]
    finally:
        glm.hf_hub_download = original


@pytest.mark.parametrize("name", ["vicuna-13b", "claude-2.1"])
def test_official_files_give_alpaca_evals_own_lc_value(tmp_path, name):
    gamed, plain = _official_like_files(tmp_path)
    annotations = alpaca_metrics.load_annotations(ANNOTATIONS / f"{name}.json")

    ours = alpaca_metrics.score(annotations, gamed, tmp_path)
    assert ours["lc_method"].startswith("official df_gamed")
    assert ours["length_controlled_winrate"] == _alpaca_eval_own(annotations, gamed, "length_controlled_v1")

    # instruction_difficulty.csv alone: the same GLM, without the gamed-baseline regularisation.
    ours_plain = alpaca_metrics.score(annotations, plain, tmp_path)
    expected = _alpaca_eval_own(annotations, gamed, "length_controlled_noreg")
    assert ours_plain["length_controlled_winrate"] == pytest.approx(expected, abs=1e-9)
    assert ours["length_controlled_winrate"] != pytest.approx(
        ours_plain["length_controlled_winrate"], abs=1e-6
    )


def test_estimated_difficulty_is_cached_by_content(tmp_path):
    first = alpaca_metrics.estimated_difficulty(ANNOTATIONS, tmp_path)
    cached = list((tmp_path / "alpaca_eval").glob("difficulty-*.csv"))
    assert len(cached) == 1
    again = alpaca_metrics.estimated_difficulty(ANNOTATIONS, tmp_path)
    assert np.allclose(first.loc[again.index].to_numpy(), again.to_numpy())
    assert len(first) == 805


def test_bad_inputs_are_one_clear_error(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"instruction": "x", "output_1": "a", "output_2": "b"}]))
    with pytest.raises(DataError, match="lacks column"):
        alpaca_metrics.load_annotations(broken)
    annotations = alpaca_metrics.load_annotations(ANNOTATIONS / "vicuna-13b.json")
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    for k in range(2):
        pd.DataFrame(
            {
                **annotations.iloc[:3].to_dict("list"),
                "instruction": [f"other {k} {i}" for i in range(3)],
                "generator_2": [f"model-{k}"] * 3,
            }
        ).to_json(unrelated / f"m{k}.json", orient="records")
    with pytest.raises(DataError, match="not in the annotations"):
        alpaca_metrics.score(annotations, unrelated, tmp_path)


@pytest.mark.integration
def test_score_alpaca_command_prints_one_json_object(tmp_path):
    command = [sys.executable, "-m", "tapir.cli", "eval", "score-alpaca", "--cache-dir", str(tmp_path)]
    done = subprocess.run(
        [*command, "--annotations", str(ANNOTATIONS / "vicuna-13b.json"), "--difficulty", str(ANNOTATIONS)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    assert set(result) == {"win_rate", "standard_error", "length_controlled_winrate", "n_total", "n_unjudged"}
    assert result["n_total"] == 805 and result["n_unjudged"] == 0
    offline = subprocess.run(
        [*command, "--annotations", str(ANNOTATIONS / "vicuna-13b.json")],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert offline.returncode == 2
    assert offline.stdout == ""
    assert offline.stderr.strip().splitlines() == [offline.stderr.strip()]
    assert "difficulty" in offline.stderr


def test_a_sample_looks_up_its_own_instructions_difficulty(tmp_path):
    gamed, plain = _official_like_files(tmp_path)
    positions = [700, 3, 511, 42, 99, 250, 8, 640]
    moved = alpaca_metrics._sample_first(gamed, positions)
    table = pd.read_csv(gamed)
    # what alpaca_eval's _get_featurized_data looks up for row g: the g-th first-seen index
    lookup = pd.read_csv(moved).drop_duplicates("index")["instruction_difficulty"]
    first = table[table["model"] == table["model"].iloc[0]].set_index("index")["instruction_difficulty"]
    assert [lookup[g] for g in range(len(positions))] == [first[p] for p in positions]
    assert len(pd.read_csv(moved)) == len(table)  # same rows, reordered
    assert alpaca_metrics._sample_first(gamed, list(range(805))) == gamed  # the full set: the file as is

    reference = pd.read_json(ALPACA / "alpaca_eval_gpt4_1106_preview_reference.json")
    annotations = alpaca_metrics.load_annotations(ANNOTATIONS / "vicuna-13b.json")
    at = {i: n for n, i in enumerate(reference["instruction"])}
    sample = annotations.set_index(annotations["instruction"].map(at)).loc[positions].reset_index(drop=True)
    aligned = alpaca_metrics.score(sample, plain, tmp_path, positions=positions)
    unaligned = alpaca_metrics.score(sample, plain, tmp_path)
    assert aligned["length_controlled_winrate"] != unaligned["length_controlled_winrate"]
    assert alpaca_metrics.score(sample, gamed, tmp_path, positions=positions)["length_controlled_winrate"] > 0


def test_the_papers_baselines_sit_beside_alpaca_evals_own_rows():
    from tapir.evaluation.published import published_rows
    from tapir.recipe import EvaluationSettings

    rows = published_rows(EvaluationSettings().published, paper=True)
    by_name = {r["model"]: r for r in rows}
    # The paper's AlpacaEval baselines are alpaca_eval's rows, raw win rate.
    assert by_name["vicuna-13b-v1.5"]["win_rate"] == pytest.approx(
        by_name["Vicuna-13B (paper)"]["win_rate"], abs=0.01
    )
    assert by_name["llama-2-13b-chat-hf"]["win_rate"] == pytest.approx(
        by_name["LLaMA2-Chat-13B (paper)"]["win_rate"], abs=0.01
    )
    names = [r["model"] for r in rows]
    assert names.index("llama-2-13b-chat-hf") + 1 == names.index("TAPIR LLaMA2-7B (paper)")
