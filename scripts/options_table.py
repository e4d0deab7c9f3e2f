"""Write the options table of docs/options.md from the addon's one declaration of its options.

    uv run python -m scripts.options_table          # rewrite the table in docs/options.md
    uv run python -m scripts.options_table --check  # exit 1 when docs/options.md is not up to date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from addon.mitm.option_table import markdown_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"
BEGIN = "<!-- options table: written by scripts/options_table.py from addon/mitm/option_table.py -->\n"
END = "<!-- end of the options table -->\n"


def render(doc: str) -> str:
    """``doc`` with the text between the markers replaced by the table."""
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}{markdown_table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.options_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that docs/options.md is up to date")
    args = p.parse_args(argv)
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        print(f"{DOC}: the table's markers are missing", file=sys.stderr)
        return 1
    new = render(doc)
    if args.check:
        if new != doc:
            print(f"{DOC} is out of date: run uv run python -m scripts.options_table", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
