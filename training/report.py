"""After training: one table and one plot of the rounds (loss, tokens/s, steps, time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapir.manifest import write_json
from tapir.training.progress import read_log
from tapir.training.sft import LOG_FILE


def write_training_report(train_dir: Path, outcomes: list[dict[str, Any]], console: Console) -> None:
    rows = []
    for outcome in outcomes:
        metrics = outcome.get("metrics") or {}
        runtime = metrics.get("train_runtime") or 0.0
        tokens = metrics.get("num_input_tokens_seen") or 0
        rows.append(
            {
                "round": outcome["round"],
                "status": outcome["status"],
                "rows": outcome["data"]["rows"],
                "steps": metrics.get("global_step"),
                "first_loss": metrics.get("first_loss"),
                "final_loss": metrics.get("final_loss"),
                "train_loss": metrics.get("train_loss"),
                "tokens": tokens,
                "tokens_per_second": round(tokens / runtime, 1) if runtime else None,
                "train_runtime_s": round(runtime, 1),
                "model_dir": outcome["model_dir"],
            }
        )
    write_json(train_dir / "summary.json", {"rounds": rows})
    plot = plot_losses(train_dir, [r["round"] for r in rows])

    table = Table(title=f"Training rounds ({train_dir})")
    for column in ("round", "status", "rows", "steps", "loss first→last", "tokens/s", "time"):
        table.add_column(column)
    for row in rows:
        first, last = row["first_loss"], row["final_loss"]
        table.add_row(
            row["round"],
            row["status"],
            str(row["rows"]),
            str(row["steps"]),
            f"{first:.3f} → {last:.3f}" if first is not None and last is not None else "n/a",
            f"{row['tokens_per_second']:.0f}" if row["tokens_per_second"] else "n/a",
            f"{row['train_runtime_s']:.0f}s",
        )
    console.print(table)
    if plot:
        console.print(f"loss curve: {plot}")


def plot_losses(train_dir: Path, names: list[str]) -> Path | None:
    """Training loss over cumulative steps, one colour per round (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offset = 0
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for name in names:
        points = [(r["step"], r["loss"]) for r in read_log(train_dir / name / LOG_FILE) if "loss" in r]
        if not points:
            continue
        last = {}
        for step, loss in points:  # a resumed round logs the same step again; keep the latest
            last[step] = loss
        steps = sorted(last)
        ax.plot([offset + s for s in steps], [last[s] for s in steps], marker="o", label=name)
        offset += steps[-1]
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step (cumulative over rounds)")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("Curriculum training loss per round")
    ax.legend()
    fig.tight_layout()
    path = train_dir / "plots" / "training_loss.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
