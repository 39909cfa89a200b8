"""Render docs/benchmarks.md from benchmarks/results/*.json (what the benchmarks saved).

    python benchmarks/render.py          # writes docs/benchmarks.md and README's measured block
    python benchmarks/render.py --check  # exit 1 when either is not what the results give

Every figure on the page is a benchmark's own output: its paragraphs and tables as it
printed them, with the command that made them, when, and on what machine. The README's
scale section shows a few of those cells, between its `measured` markers.
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
README = HERE.parent / "README.md"
BEGIN, END = "<!-- measured: benchmarks/render.py -->", "<!-- /measured -->"
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
    results = load()
    names = [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER))
    body = [INTRO.rstrip()] + [section(results[n]) for n in names]
    if not names:
        body.append("No benchmark has saved results yet: run one of `make benchmark*`.")
    return "\n\n".join(body).rstrip() + "\n"


def _rows(result: dict[str, Any] | None, table: int) -> list[dict[str, str]]:
    """The rows of a result's `table`-th table as {column: cell}."""
    tables = [b for b in (result or {}).get("output", []) if "columns" in b]
    if len(tables) <= table:
        return []
    return [dict(zip(tables[table]["columns"], r, strict=False)) for r in tables[table]["rows"]]


def scale_summary(results: dict[str, dict[str, Any]]) -> str:
    """The README's scale table: a few cells of the saved results, each naming its
    benchmark (the page has the rest)."""
    lines = ["| what | engine | measured |", "|---|---|---|"]
    for r in _rows(results.get("scale"), 0):
        lines.append(f"| ETL, CSV to the store (`scale`) | {r['engine']} | {r['rows/s']} rows/s |")
    for r in _rows(results.get("read"), 0)[-1:]:
        lines.append(
            f"| reading {r['rows']} rows for training (`read`) | local | "
            f"{r['columns: rows/s'].split(' ')[0]} rows/s |"
        )
    for r in _rows(results.get("read"), 1):
        lines.append(
            f"| `train`, logistic regression, {r['rows']} rows (`read`) | local | peak "
            f"{r['peak memory']}, accuracy {r['hold-out accuracy']} |"
        )
    for r in _rows(results.get("boost"), 0):
        if r.get("store") == "embedded":
            workers = "" if r["worker peaks MB"] == "-" else f", workers {r['worker peaks MB']} MB"
            lines.append(
                f"| `train`, lightgbm, {r['rows']} rows (`boost`) | {r['engine']} | "
                f"{r['train s']} s, client {r['client peak MB']} MB{workers} |"
            )
    for r in _rows(results.get("batch"), 0):
        lines.append(
            f"| `predict`, Parquet to Parquet, {r['source']} (`batch`) | {r['engine']} | "
            f"{r['rows/s (median)']} rows/s |"
        )
    return "\n".join(lines)


def readme(results: dict[str, dict[str, Any]]) -> str:
    """README.md with its measured block (between BEGIN and END) rendered."""
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return text
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{BEGIN}\n{scale_summary(results)}\n{END}{tail}"


def load() -> dict[str, dict[str, Any]]:
    results = {}
    for path in sorted((HERE / "results").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        results[data["benchmark"]] = data
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    rendered = {PAGE: page(), README: readme(load())}
    for path, text in rendered.items():
        if args.check:
            if path.read_text(encoding="utf-8") != text:
                print(f"{path} is not what benchmarks/results give: run benchmarks/render.py")
                sys.exit(1)
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
