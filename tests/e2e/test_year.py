"""A shortened year in production (benchmarks/year.py): four months of a drifting world
through the real commands (etl, a running server, monitor --retrain with the gate and
the rollback policy), and the invariants an operator relies on."""

from __future__ import annotations

from pathlib import Path

from benchmarks.year import check, draw, simulate


def test_a_short_year_keeps_every_invariant(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    said: list[str] = []
    result = simulate(root, months=4, rows=400, initial=1200, say=said.append)
    assert [row["month"] for row in result["timeline"]] == [1, 2, 3, 4]
    assert all(row["roc_auc"] is not None for row in result["timeline"])  # labels matured
    outcome = check(result, root)  # raises naming the invariant that broke
    assert 0.5 < outcome["first"] <= 1.0 and 0.5 < outcome["final"] <= 1.0
    if outcome["final_version"] != result["first_version"]:
        assert outcome["final"] >= outcome["first"] - 0.02, outcome
    png = tmp_path / "year.png"
    draw(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(said) == 1 + 4  # the first training and one line a month
