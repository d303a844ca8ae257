"""The ablation's table, plot and report section, drawn from its one evaluation's leaderboard.

One row per arm (and the untrained student): AlpacaEval 2.0 win rate and LC win rate with their
standard errors, MT-Bench overall with its standard error over questions, the judge-free measures
(answers that end before the cap, their mean length in tokens, answers in the chat format: what
a small judge cannot blur), and MT-Bench per category.
Written as ``ablation.csv`` / ``ablation.md`` in the workspace, drawn as ``plots/ablation.png``
(bars with ±1 s.e.), and added as a section of the evaluation's ``report.html``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from tapir.evaluation import html_report
from tapir.evaluation.leaderboard import MT_CATEGORIES

COLUMNS = [
    ("arm", "arm", "text"),
    ("what", "what differs", "text"),
    ("win_rate", "AE2 win rate", "f2"),
    ("standard_error", "± s.e.", "f2"),
    ("length_controlled_winrate", "AE2 LC", "f2"),
    ("lc_standard_error", "LC ± s.e.", "f2"),
    ("mt_bench", "MT-Bench", "f2"),
    ("mt_bench_standard_error", "MT ± s.e.", "f2"),
    *html_report.JUDGE_FREE,
    *[(f"mt_{c}", c, "f2") for c in MT_CATEGORIES],
]
#: The rich console table: the judged columns, then whether the answers end.
CONSOLE = 10


def ablation_table(leaderboard: pd.DataFrame, arms: dict[str, str]) -> pd.DataFrame:
    """The arms' rows of the leaderboard (student first), with what each arm changes."""
    wanted = {"student": "untrained student (no SFT)", **arms}
    rows = []
    for name, what in wanted.items():
        found = leaderboard[leaderboard["model"] == name]
        if found.empty:
            continue
        row = found.iloc[0].to_dict()
        rows.append({"arm": name, "what": what, **{k: row.get(k) for k, _, _ in COLUMNS[2:]}})
    return pd.DataFrame(rows, columns=[k for k, _, _ in COLUMNS])


def _present(table: pd.DataFrame, columns: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [c for c in columns if c[0] in table.columns and table[c[0]].notna().any()]


def markdown(table: pd.DataFrame) -> str:
    present = _present(table, COLUMNS)
    lines = ["| " + " | ".join(h for _, h, _ in present) + " |", "|" + "---|" * len(present)]
    for _, row in table.iterrows():
        cells = [html_report.cell_text(row[k], kind) for k, _, kind in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> Path | None:
    """AlpacaEval WR, LC and MT-Bench (x10, same axis) per arm, with ±1 s.e. error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("win_rate", "standard_error", "AE2 win rate", 1.0),
        ("length_controlled_winrate", "lc_standard_error", "AE2 LC win rate", 1.0),
        ("mt_bench", "mt_bench_standard_error", "MT-Bench (x10)", 10.0),
    ]
    metrics = [m for m in metrics if m[0] in table.columns and table[m[0]].notna().any()]
    if table.empty or not metrics:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(table)), 4))
    width = 0.8 / len(metrics)
    for index, (value, error, label, scale) in enumerate(metrics):
        xs = [i + (index - (len(metrics) - 1) / 2) * width for i in range(len(table))]
        heights = table[value].astype(float).fillna(0) * scale
        errors = table[error].astype(float).fillna(0) * scale if error in table.columns else None
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=label)
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels(table["arm"], rotation=15)
    ax.set_ylabel("score (±1 s.e.)")
    ax.set_title("Ablation at equal training budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(table: pd.DataFrame, console: Console) -> None:
    shown = Table(title="Ablation at equal training budget", title_justify="left")
    present = _present(table, COLUMNS[:CONSOLE])
    for _, header, _ in present:
        shown.add_column(header)
    for _, row in table.iterrows():
        shown.add_row(*[html_report.cell_text(row[k], kind) for k, _, kind in present])
    console.print(shown)


def write_ablation_report(
    eval_dir: Path, root: Path, arms: dict[str, str], steps: int, console: Console
) -> pd.DataFrame:
    """ablation.csv / .md, plots/ablation.png and the report section; returns the table."""
    from tapir.evaluation.run import write_page

    leaderboard = pd.read_csv(eval_dir / "leaderboard.csv")
    table = ablation_table(leaderboard, arms)
    table.to_csv(root / "ablation.csv", index=False)
    note = (
        f"Every arm trained {steps} optimizer steps at the same batch size (the same number of "
        "examples seen) and was scored by one `tapir eval` with one judge."
    )
    (root / "ablation.md").write_text(note + "\n\n" + markdown(table), encoding="utf-8")
    drawn = plot(table, eval_dir / "plots" / "ablation.png")
    summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    records: list[dict[str, Any]] = table.to_dict("records")
    block = f"<p class=note>{note}</p>" + html_report.table_html(records, COLUMNS)
    if drawn is not None:
        block += html_report.image_html(drawn)
    plots = sorted(p for p in (eval_dir / "plots").glob("*.png") if p.name != "ablation.png")
    write_page(
        eval_dir,
        f"tapir eval: {summary.get('recipe', '')} (ablation)",
        leaderboard,
        summary.get("results", {}),
        plots,
        [("Ablation at equal training budget", block)],
    )
    print_table(table, console)
    console.print(f"[green]wrote[/] {root / 'ablation.md'}, {eval_dir / 'report.html'}")
    return table
