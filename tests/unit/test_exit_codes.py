"""Exit codes, for every command: docs/cli.md lists each command with its codes, and each
command run where it cannot work (an empty folder, bad arguments) exits with the code
that page gives for that cause, in one line without a traceback, and leaves no store or
tracking file behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcycle.cli import app

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "cli.md"
runner = CliRunner()


def _table() -> dict[str, dict[str, str]]:
    rows = {}
    for line in PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`[a-z-]+`", cells[0]):
            name, json_flag, ok, failed, bad = cells
            rows[name.strip("`")] = {"json": json_flag, "0": ok, "1": failed, "2": bad}
    return rows


def _commands() -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def test_the_page_lists_every_command_and_which_take_json() -> None:
    table = _table()
    assert set(table) == _commands()
    for name, row in table.items():
        shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert ("--json" in shown) == (row["json"] == "yes"), name


# command line -> (code, the cause's words in the output)
CASES = [
    (["etl"], 2, "no such file or folder"),
    (["etl", "--source", "missing.csv"], 2, "missing.csv"),
    (["train"], 1, "no labelled rows"),
    (["train", "--no-such-flag"], 2, "No such option"),
    (["preprocess"], 1, "no labelled rows"),
    (["promote", "1"], 1, "run `mlcycle train` first"),
    (["promote", "latest"], 2, "version number"),
    (["promote", "1", "--force"], 2, "--force needs --reason"),
    (["rollback"], 1, "run `mlcycle train` first"),
    (["models"], 1, "run `mlcycle train` first"),
    (["history", "--json"], 1, "run `mlcycle train` first"),
    (["monitor"], 0, "nothing to monitor"),
    (["status"], 0, "no report yet"),
    (["quarantine"], 0, "no quarantined rows"),
    (["doctor"], 1, ""),
    (["serve", "--port", "0"], 2, "no model to serve yet"),
    (["predict", "--source", "new.csv", "--out", "s.parquet"], 2, "no such file"),
    (["predict", "--source", "store", "--out", "s.parquet"], 1, "run `mlcycle train` first"),
    (["publish", "nofile.csv"], 2, "nofile.csv"),
    (["demo-data", "--rows", "0"], 2, "--rows"),
    (["hash-key"], 2, "no key on standard input"),
    (["mlflow-users"], 2, "is not set"),
]


@pytest.mark.parametrize(("args", "code", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_command_that_cannot_work_exits_with_its_documented_code_and_leaves_no_files(
    args: list[str], code: int, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MLFLOW_TRACKING_URI", "MONGO_URI", "MLCYCLE_DATA_DIR", "MLCYCLE_DATASET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, input="", env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    assert words in result.output
    assert "Traceback" not in result.output
    assert _table()[args[0]][str(code)] if code in (0, 1, 2) else True  # documented
    assert sorted(p.name for p in tmp_path.rglob("*")) == [], "files left behind"
