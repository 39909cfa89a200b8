"""The benchmark page is what the benchmarks saved: no figure typed by hand."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.common import blocks

from tests.servers import REPO


def test_the_page_is_rendered_from_the_saved_results() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "render.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_printed_output_becomes_paragraphs_and_tables() -> None:
    printed = (
        "input: 1,000 rows\nsecond line\n\n| store | rows/s |\n|---|---:|\n"
        "| embedded | 41,924 |\n| ferretdb | 7,306 |\n\nsteady 500 records/s\n"
    )
    assert blocks(printed) == [
        {"text": "input: 1,000 rows\nsecond line"},
        {"columns": ["store", "rows/s"], "rows": [["embedded", "41,924"], ["ferretdb", "7,306"]]},
        {"text": "steady 500 records/s"},
    ]
