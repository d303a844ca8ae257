"""Write docs/reference/recipe.md from the recipe schema's field descriptions.

The reference is generated, never edited by hand: a test fails when the committed page differs
from what this script writes (run it after changing a field: `python tools/recipe_reference.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "recipe.md"


def render() -> str:
    from tapir.recipe import field_reference

    lines = [
        "# Recipe reference",
        "",
        "Every field of a recipe, its default and what it does — generated from the schema",
        "(`tools/recipe_reference.py`; `tapir recipe fields` prints the same list). Sections are in",
        "bold; a field is set in the YAML file or with `--set section.field=value`.",
        "",
        "| field | default | what it does |",
        "|---|---|---|",
    ]
    for name, default, description in field_reference():
        text = " ".join(description.split()).replace("|", "\\|")
        if not default:
            lines.append(f"| **`{name}`** | | {text} |")
        else:
            shown = default.replace("|", "\\|")
            lines.append(f"| `{name}` | `{shown}` | {text} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
