"""Published numbers shown beside ours: alpaca_eval's AlpacaEval 2.0 leaderboard (shipped in the
alpaca_eval package) and the TAPIR paper's headline rows (as summarised in METHOD.md).

Published rows were judged by GPT-4 Turbo (alpaca_eval's default annotator); ours are judged by
whatever the recipe names, so every row says who judged it.
"""

from __future__ import annotations

import pandas as pd

from tapir.errors import EvaluationError

ALPACA_EVAL_JUDGE = "weighted_alpaca_eval_gpt4_turbo"

#: Yue et al., "Distilling Instruction-following Abilities of Large Language Models with
#: Task-aware Curriculum Planning", EMNLP Findings 2024: AlpacaEval 2.0 win rates.
#: The baselines are alpaca_eval's own leaderboard rows (raw win rate), named in ``source``.
PAPER_ROWS = [
    {"model": "TAPIR LLaMA2-7B (paper)", "win_rate": 7.80, "source": "TAPIR paper"},
    {
        "model": "LLaMA2-Chat-13B (paper)",
        "win_rate": 7.70,
        "source": "TAPIR paper = alpaca_eval llama-2-13b-chat-hf",
    },
    {"model": "Vicuna-13B (paper)", "win_rate": 6.72, "source": "TAPIR paper = alpaca_eval vicuna-13b-v1.5"},
]


def alpaca_eval_leaderboard() -> pd.DataFrame:
    from alpaca_eval.constants import ALPACAEVAL_2_LEADERBOARD_PATHS

    path = ALPACAEVAL_2_LEADERBOARD_PATHS / f"{ALPACA_EVAL_JUDGE}_leaderboard.csv"
    return pd.read_csv(path, index_col=0)


def published_rows(names: list[str], paper: bool) -> list[dict]:
    rows = []
    if names:
        board = alpaca_eval_leaderboard()
        unknown = [n for n in names if n not in board.index]
        if unknown:
            raise EvaluationError(
                f"evaluation.published: not on alpaca_eval's AlpacaEval 2.0 leaderboard: {', '.join(unknown)}"
            )
        for name in names:
            row = board.loc[name]
            rows.append(
                {
                    "model": name,
                    "kind": "published",
                    "source": "alpaca_eval leaderboard",
                    "judge": ALPACA_EVAL_JUDGE,
                    "win_rate": float(row["win_rate"]),
                    "standard_error": float(row["standard_error"]),
                    "length_controlled_winrate": float(row["length_controlled_winrate"]),
                    "n_total": int(row["n_total"]),
                    "avg_length": int(row["avg_length"]),
                }
            )
    if paper:
        for row in PAPER_ROWS:
            rows.append({**row, "kind": "paper", "judge": "GPT-4 Turbo (paper)"})
    return rows
