"""One self-contained HTML page that reads like a report: which rows can be compared, the
leaderboard's key columns, MT-Bench by category, the plots, and the judge's health per model.

Numbers are shown as people compare them (win rates and scores with two decimals, counts as
integers); wide tables scroll inside the page instead of running off it. The page marks itself
once every image has loaded (``data-rendered`` on ``<body>``), so a headless browser can check
that it really renders, not just that the file exists.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

from tapir.evaluation.leaderboard import MT_CATEGORIES

READY_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var ok = images.length > 0 && images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-rendered', ok ? 'yes' : 'broken-images');
  document.body.setAttribute('data-images', String(images.length));
  // the page fits its window: wide tables scroll inside their box, not the page
  document.body.setAttribute('data-fits', String(document.documentElement.scrollWidth <= window.innerWidth));
});
</script>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.ours td { background: #f7fbff; }
.note { color: #555; font-size: 0.95em; }
.group { display: inline-block; min-width: 1.4em; text-align: center; border-radius: 3px;
         background: #e8e8e8; }
figure { margin: 1em 0; } img { max-width: 100%; }
"""

#: What the answers show without a judge (answer_stats), per benchmark: the leaderboard's and
#: the ablation table's columns.
JUDGE_FREE = [
    ("ae_ends_rate", "AE2 ends", "pct"),
    ("mt_ends_rate", "MT ends", "pct"),
    ("ae_mean_tokens", "AE2 tokens", "f0"),
    ("mt_mean_tokens", "MT tokens", "f0"),
    ("ae_in_format", "AE2 in format", "pct"),
    ("mt_in_format", "MT in format", "pct"),
]
#: Leaderboard columns in reading order: (column, header, format). ``int`` counts, ``f2`` two decimals.
BOARD = [
    ("model", "model", "text"),
    ("kind", "kind", "text"),
    ("group", "judged by", "group"),
    ("win_rate", "AE2 win rate", "f2"),
    ("standard_error", "± s.e.", "f2"),
    ("length_controlled_winrate", "AE2 LC", "f2"),
    ("n_total", "AE2 n", "int"),
    ("avg_length", "avg length", "int"),
    ("mt_bench", "MT-Bench", "f2"),
    ("mt_bench_standard_error", "MT ± s.e.", "f2"),
    ("mt_bench_turn_1", "turn 1", "f2"),
    ("mt_bench_turn_2", "turn 2", "f2"),
    ("mt_bench_scoring", "MT grades", "text"),
    *JUDGE_FREE,
    ("judge_parse_failures", "unparsed", "int"),
]
CATEGORIES = [("model", "model", "text")] + [(f"mt_{c}", c, "f2") for c in MT_CATEGORIES]
#: Judge health, per model and benchmark: (key, header, format); usage keys sit under "usage".
HEALTH = [
    ("judgments", "verdicts", "int"),
    ("parse_failures", "unparsed", "int"),
    ("retries", "retries", "int"),
    ("call_errors", "call errors", "int"),
    ("first_shown_preferred", "first shown won", "pct"),
    ("longer_output_preferred", "longer won", "pct"),
    ("calls", "calls", "int"),
    ("input_tokens", "input tokens", "int"),
    ("output_tokens", "output tokens", "int"),
    ("seconds", "seconds", "f1"),
    ("cost_usd", "cost $", "f4"),
]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def cell_text(value: Any, kind: str) -> str:
    """A value as its column's format shows it (empty when missing): the page's and the
    ablation table's cells."""
    if _missing(value):
        return ""
    if kind == "int":
        return f"{round(float(value)):,}"
    if kind == "pct":
        return f"{float(value) * 100:.0f} %"
    if kind.startswith("f"):
        return f"{float(value):.{int(kind[1:])}f}"
    return str(value)


def _cell(value: Any, kind: str) -> str:
    if kind == "group" and not _missing(value):
        return f"<td><span class=group>{html.escape(str(value))}</span></td>"
    text = cell_text(value, kind)
    if kind == "text":  # left-aligned; the title repeats the text on hover
        return f'<td class="text" title="{html.escape(text)}">{html.escape(text)}</td>'
    return f"<td>{html.escape(text)}</td>"


def table_html(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]], row_class=None) -> str:
    head = "".join(
        f"<th class=text>{html.escape(header)}</th>" if kind == "text" else f"<th>{html.escape(header)}</th>"
        for _, header, kind in columns
    )
    body = []
    for row in rows:
        css = f' class="{row_class(row)}"' if row_class and row_class(row) else ""
        body.append(f"<tr{css}>" + "".join(_cell(row.get(key), kind) for key, _, kind in columns) + "</tr>")
    return (
        f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def judge_groups(table: pd.DataFrame) -> dict[str, str]:
    """A letter per distinct judge, in order of first appearance: rows are comparable only within one."""
    groups: dict[str, str] = {}
    for judge in table["judge"]:
        key = str(judge)
        if key not in groups:
            groups[key] = chr(ord("A") + len(groups)) if len(groups) < 26 else str(len(groups))
    return groups


def comparability(table: pd.DataFrame, groups: dict[str, str]) -> list[str]:
    """One line per judge: which rows it judged (only rows of the same letter are comparable)."""
    lines = []
    for judge, letter in groups.items():
        names = table.loc[table["judge"].astype(str) == judge, "model"].astype(str).tolist()
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(f"{letter}: judged by {judge} — {shown}")
    return lines


def _health_rows(health: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model, benchmarks in health.items():
        for benchmark, report in benchmarks.items():
            rows.append({"model": model, "benchmark": benchmark, **report, **(report.get("usage") or {})})
    return rows


def write(
    path: Path,
    title: str,
    table: pd.DataFrame,
    health: dict[str, Any],
    plots: list[Path],
    notes: list[str],
    sections: list[tuple[str, str]] | None = None,
) -> Path:
    """The page; ``sections`` are (title, HTML) blocks a caller adds after the leaderboard."""
    groups = judge_groups(table)
    rows = [{**row, "group": groups[str(row["judge"])]} for row in table.to_dict("records")]
    ours = {"round", "student", "model", "baseline"}
    categories = [r for r in rows if any(not _missing(r.get(key)) for key, _, _ in CATEGORIES[1:])]
    health_columns = [("model", "model", "text"), ("benchmark", "benchmark", "text")] + [
        column for column in HEALTH if any(not _missing(r.get(column[0])) for r in _health_rows(health))
    ]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        *[f"<p class=note>{html.escape(n)}</p>" for n in notes],
        "<p><b>Which rows compare:</b> only rows judged by the same judge (the same letter).</p>",
        "<ul class=note>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in comparability(table, groups))
        + "</ul>",
        "<h2>Leaderboard</h2>",
        table_html(rows, BOARD, lambda r: "ours" if r.get("kind") in ours else ""),
    ]
    if categories:
        body += ["<h2>MT-Bench by category</h2>", table_html(categories, CATEGORIES)]
    for heading, block in sections or []:
        body += [f"<h2>{html.escape(heading)}</h2>", block]
    body += ["<h2>Plots</h2>", *[image_html(p) for p in plots]]
    body += ["<h2>Judge health</h2>"]
    health_rows = _health_rows(health)
    if health_rows:
        body += [
            "<p class=note>Per model and benchmark: verdicts asked, those that did not parse, re-asks, "
            "failed calls; how often the output shown first (position bias) and the longer output "
            "(length bias) won; the judge's calls, tokens, time and cost in this run (cached verdicts "
            "cost nothing).</p>",
            table_html(health_rows, health_columns),
        ]
    else:
        body.append("<p class=note>No model was judged in this run.</p>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body data-rendered="no">
{chr(10).join(body)}
{READY_SCRIPT}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def image_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}"></figure>'


def chromium_binary() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(page: Path, *flags: str, timeout_s: float) -> Any:
    import subprocess

    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            *flags,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def check_renders(page: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """Open the page in headless Chromium; report whether every image loaded and the table is there."""
    import re

    result = _chromium(page, "--dump-dom", timeout_s=timeout_s)
    dom = result.stdout
    rendered = re.search(r'<body[^>]*data-rendered="([^"]+)"', dom)
    images = re.search(r'data-images="(\d+)"', dom)
    fits = re.search(r'data-fits="(\w+)"', dom)
    return {
        "rendered": rendered.group(1) if rendered else None,
        "fits_the_window": fits.group(1) == "true" if fits else None,
        "images": int(images.group(1)) if images else 0,
        "table_rows": dom.count("<tr"),
        "returncode": result.returncode,
    }


def screenshot(
    page: Path, target: Path, width: int = 1280, height: int = 2400, timeout_s: float = 60.0
) -> Path:
    """A PNG of the page as headless Chromium draws it (to look at, and to attach to a review)."""
    _chromium(
        page, f"--screenshot={target.resolve()}", f"--window-size={width},{height}", timeout_s=timeout_s
    )
    if not target.is_file():
        raise FileNotFoundError(f"chromium wrote no screenshot of {page}")
    return target
