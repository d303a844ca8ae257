"""The leaderboard: our models (per round), baselines and published rows in one table.

Written as CSV (for tools) and Markdown (for people and PRs); ``plots`` and ``html_report`` draw
from the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

MT_CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]
COLUMNS = [
    "model",
    "kind",
    "stage",
    "judge",
    "win_rate",
    "standard_error",
    "length_controlled_winrate",
    "lc_standard_error",
    "n_total",
    "avg_length",
    "mt_bench",
    "mt_bench_standard_error",
    "mt_bench_turn_1",
    "mt_bench_turn_2",
    "mt_bench_scoring",
    *[f"mt_{c}" for c in MT_CATEGORIES],
    "ae_ends_rate",
    "ae_mean_tokens",
    "ae_in_format",
    "mt_ends_rate",
    "mt_mean_tokens",
    "mt_in_format",
    "judge_parse_failures",
    "source",
]
#: The judge-free columns (answer_stats), per benchmark: (leaderboard prefix, results key).
ANSWER_COLUMNS = (("ae", "alpaca_eval"), ("mt", "mt_bench"))


def model_row(name: str, kind: str, stage: int | None, judge: str, results: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": name,
        "kind": kind,
        "stage": stage,
        "judge": judge,
        "source": "tapir eval",
    }
    failures = 0
    if "alpaca_eval" in results:
        metrics = results["alpaca_eval"]["metrics"]
        for key in (
            "win_rate",
            "standard_error",
            "length_controlled_winrate",
            "lc_standard_error",
            "n_total",
        ):
            row[key] = metrics.get(key)
        row["avg_length"] = metrics.get("avg_length")
        failures += results["alpaca_eval"]["judge_health"]["parse_failures"]
    if "mt_bench" in results:
        metrics = results["mt_bench"]["metrics"]
        row["mt_bench"] = metrics["overall"]
        row["mt_bench_standard_error"] = metrics.get("standard_error")
        row["mt_bench_turn_1"] = metrics["turn_1"]
        row["mt_bench_turn_2"] = metrics["turn_2"]
        row["mt_bench_scoring"] = metrics.get("scoring", "written")
        for category, value in metrics["categories"].items():
            row[f"mt_{category}"] = value
        failures += results["mt_bench"]["judge_health"]["parse_failures"]
    for prefix, benchmark in ANSWER_COLUMNS:
        answers = (results.get(benchmark) or {}).get("metrics", {}).get("answers") or {}
        for key in ("ends_rate", "mean_tokens", "in_format"):
            row[f"{prefix}_{key}"] = answers.get(key)
    row["judge_parse_failures"] = failures
    return row


def build(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table.columns:
            table[column] = None
    return table[COLUMNS]


def write(table: pd.DataFrame, folder: Path) -> None:
    table.to_csv(folder / "leaderboard.csv", index=False)
    (folder / "leaderboard.md").write_text(markdown(table), encoding="utf-8")


def markdown(table: pd.DataFrame) -> str:
    """The columns people read first, numbers rounded; empty cells where a row has no value."""
    shown = table[
        [
            "model",
            "kind",
            "judge",
            "win_rate",
            "standard_error",
            "length_controlled_winrate",
            "n_total",
            "mt_bench",
            "mt_bench_standard_error",
            "mt_bench_turn_1",
            "mt_bench_turn_2",
            "mt_bench_scoring",
            "ae_ends_rate",
            "mt_ends_rate",
            "ae_mean_tokens",
            "mt_mean_tokens",
            "ae_in_format",
            "mt_in_format",
            "judge_parse_failures",
        ]
    ].rename(
        columns={
            "win_rate": "AE2 win rate",
            "standard_error": "± s.e.",
            "length_controlled_winrate": "AE2 LC win rate",
            "n_total": "AE2 n",
            "mt_bench": "MT-Bench",
            "mt_bench_standard_error": "MT ± s.e.",
            "mt_bench_turn_1": "turn 1",
            "mt_bench_turn_2": "turn 2",
            "mt_bench_scoring": "MT grades",
            "ae_ends_rate": "AE2 ends",
            "mt_ends_rate": "MT ends",
            "ae_mean_tokens": "AE2 tokens",
            "mt_mean_tokens": "MT tokens",
            "ae_in_format": "AE2 in format",
            "mt_in_format": "MT in format",
            "judge_parse_failures": "unparsed verdicts",
        }
    )
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    counts = {"AE2 n", "unparsed verdicts"}
    shares = {"AE2 ends", "MT ends", "AE2 in format", "MT in format"}
    whole = {"AE2 tokens", "MT tokens"}
    lines = []
    for _, row in shown.iterrows():
        cells = []
        for column, value in row.items():
            if value is None or (isinstance(value, float) and pd.isna(value)):
                cells.append("")
            elif column in counts:
                cells.append(str(int(value)))
            elif column in shares:
                cells.append(f"{float(value):.0%}")
            elif column in whole:
                cells.append(f"{float(value):.0f}")
            elif isinstance(value, float):
                cells.append(f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"
