"""Leaderboard plots: AlpacaEval bars with error bars, the MT-Bench radar, the round curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tapir.evaluation.leaderboard import MT_CATEGORIES

OURS = ("round", "student", "model", "baseline")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def alpaca_bars(table: pd.DataFrame, path: Path) -> Path | None:
    """Win rate and LC win rate per row, ± standard error (published rows hatched)."""
    rows = table[table["win_rate"].notna()]
    if rows.empty:
        return None
    plt = _pyplot()
    x = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.2))
    hatch = ["" if k in OURS else "//" for k in rows["kind"]]
    win = ax.bar(
        x - width / 2,
        rows["win_rate"],
        width,
        yerr=rows["standard_error"].fillna(0),
        capsize=3,
        label="win rate",
        color="#4C72B0",
    )
    lc = ax.bar(
        x + width / 2,
        rows["length_controlled_winrate"].astype(float),  # paper rows have none: no bar
        width,
        yerr=rows["lc_standard_error"].astype(float).fillna(0),
        capsize=3,
        label="LC win rate",
        color="#DD8452",
    )
    for bars in (win, lc):
        for bar, h in zip(bars, hatch):
            bar.set_hatch(h)
    ax.set_xticks(x, rows["model"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% vs reference (AlpacaEval 2.0)")
    ax.set_title("AlpacaEval 2.0 (hatched: published, judged by GPT-4 Turbo)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mt_bench_radar(table: pd.DataFrame, path: Path) -> Path | None:
    """One polygon per evaluated model over the eight MT-Bench categories (scores 1-10)."""
    columns = [f"mt_{c}" for c in MT_CATEGORIES]
    rows = table[table[columns].notna().any(axis=1)]
    if rows.empty:
        return None
    plt = _pyplot()
    angles = np.linspace(0, 2 * np.pi, len(MT_CATEGORIES), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(5.5, 5.5), subplot_kw={"polar": True})
    for _, row in rows.iterrows():
        values = [float(row[c]) if pd.notna(row[c]) else 0.0 for c in columns]
        ax.plot(angles + angles[:1], values + values[:1], label=row["model"])
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.08)
    ax.set_xticks(angles, MT_CATEGORIES)
    ax.set_ylim(0, 10)
    ax.set_title("MT-Bench per category")
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def round_curve(table: pd.DataFrame, path: Path) -> Path | None:
    """Over the curriculum (untrained student, warm-up, round 1..R): the judged scores on the
    left, what moves without a judge on the right (answers that end, answers in the chat format)."""
    rows = table[table["stage"].notna()].sort_values("stage")
    if rows.empty:
        return None
    plt = _pyplot()
    fig, (ax, free) = plt.subplots(1, 2, figsize=(11, 4))
    if rows["win_rate"].notna().any():
        ax.errorbar(
            rows["model"],
            rows["win_rate"],
            yerr=rows["standard_error"].fillna(0),
            marker="o",
            capsize=3,
            label="AE2 win rate",
        )
        ax.plot(rows["model"], rows["length_controlled_winrate"], marker="s", label="AE2 LC win rate")
    ax.set_ylabel("% vs reference")
    ax.set_xlabel("curriculum stage")
    handles, labels = ax.get_legend_handles_labels()
    if rows["mt_bench"].notna().any():
        right = ax.twinx()
        right.errorbar(
            rows["model"],
            rows["mt_bench"],
            yerr=rows["mt_bench_standard_error"].astype(float).fillna(0),
            marker="^",
            capsize=3,
            color="#55A868",
            label="MT-Bench",
        )
        right.set_ylabel("MT-Bench (1-10)")
        right.set_ylim(0, 10)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax.set_title("Judged, round over round")
    styles = {"ends_rate": ("o", "ends before the cap"), "in_format": ("s", "in the chat format")}
    for prefix, benchmark in (("ae", "AE2"), ("mt", "MT")):
        for key, (marker, what) in styles.items():
            column = f"{prefix}_{key}"
            if column in rows and rows[column].notna().any():
                free.plot(
                    rows["model"],
                    100 * rows[column].astype(float),
                    marker=marker,
                    label=f"{benchmark}: {what}",
                )
    free.set_ylim(-5, 105)
    free.set_ylabel("% of answers")
    free.set_xlabel("curriculum stage")
    free.set_title("Without a judge")
    if free.get_legend_handles_labels()[0]:
        free.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(table: pd.DataFrame, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [
        alpaca_bars(table, folder / "alpaca_eval_winrates.png"),
        mt_bench_radar(table[table["kind"].isin(OURS)], folder / "mt_bench_radar.png"),
        round_curve(table, folder / "round_curve.png"),
    ]
    return [p for p in drawn if p is not None]
