"""Render docs/benchmarks.md from benchmarks/results/*.json (what the benchmarks saved).

    python benchmarks/render.py          # writes docs/benchmarks.md
    python benchmarks/render.py --check  # exit 1 when docs/benchmarks.md is not what the results give

Every figure on the page is a benchmark's own output: its paragraphs and tables as it
printed them, with the command that made them, when, and on what machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "benchmarks.md"
ORDER = ["etl", "read", "stream", "serve", "shadow", "monitor", "scale", "boost", "batch"]

INTRO = """# Benchmarks

Every figure below is printed by a benchmark in `benchmarks/` and saved by it to
`benchmarks/results/<name>.json`; `python benchmarks/render.py` writes this page from
those files (a test checks the page matches them). Nothing here is asserted by the test
suite: the machines are small and shared, so read the spreads, and re-run a benchmark
with the command shown to measure your own.
"""


def _doc(name: str) -> str:
    """The benchmark script's docstring (its usage lines left out): what it measures."""
    source = HERE / f"{name}.py"
    if not source.exists():
        return ""
    text = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    paragraphs = [p for p in text.split("\n\n") if not p.lstrip().startswith("python ")]
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _table(block: dict[str, Any]) -> str:
    columns = block["columns"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in block["rows"]]
    return "\n".join(lines)


def section(result: dict[str, Any]) -> str:
    name = result["benchmark"]
    m = result["machine"]
    parts = [
        f"## {name}",
        _doc(name),
        f"`{result['command']}`: run {result['started']} ({result['seconds']:,.0f} s) on "
        f"{m['cpus']} CPUs, {m['memory_gib']} GiB, Python {m['python']}.",
    ]
    for block in result["output"]:
        if "columns" in block:
            parts.append(_table(block))
        elif block["text"].strip():
            parts.append("```\n" + block["text"] + "\n```")
    return "\n\n".join(p for p in parts if p)


def page() -> str:
    results = {}
    for path in sorted((HERE / "results").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        results[data["benchmark"]] = data
    names = [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER))
    body = [INTRO.rstrip()] + [section(results[n]) for n in names]
    if not names:
        body.append("No benchmark has saved results yet: run one of `make benchmark*`.")
    return "\n\n".join(body).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = page()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is not what benchmarks/results give: run benchmarks/render.py")
            sys.exit(1)
        return
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
