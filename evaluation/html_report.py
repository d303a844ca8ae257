"""One self-contained HTML page: the leaderboard, judge health and the plots.

The page marks itself once every image has loaded (``data-rendered`` on ``<body>``), so a
headless browser can check that it really renders, not just that the file exists.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

READY_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var ok = images.length > 0 && images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-rendered', ok ? 'yes' : 'broken-images');
  document.body.setAttribute('data-images', String(images.length));
});
</script>
"""


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}"></figure>'


def write(
    path: Path, title: str, table: pd.DataFrame, health: dict[str, Any], plots: list[Path], notes: list[str]
) -> Path:
    shown = table.dropna(axis=1, how="all")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        *[f"<p class=note>{html.escape(n)}</p>" for n in notes],
        "<h2>Leaderboard</h2>",
        shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.2f}", classes="board"),
        "<h2>Plots</h2>",
        *[_image(p) for p in plots],
        "<h2>Judge health</h2>",
        f"<pre>{html.escape(json.dumps(health, indent=2))}</pre>",
    ]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table.board {{ border-collapse: collapse; font-size: 13px; }}
table.board td, table.board th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
img {{ max-width: 100%; }}
.note {{ color: #555; }}
</style></head>
<body data-rendered="no">
{chr(10).join(body)}
{READY_SCRIPT}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def chromium_binary() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def check_renders(page: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """Open the page in headless Chromium; report whether every image loaded and the table is there."""
    import re
    import subprocess

    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    dom = result.stdout
    rendered = re.search(r'<body[^>]*data-rendered="([^"]+)"', dom)
    images = re.search(r'data-images="(\d+)"', dom)
    return {
        "rendered": rendered.group(1) if rendered else None,
        "images": int(images.group(1)) if images else 0,
        "table_rows": dom.count("<tr"),
        "returncode": result.returncode,
    }
