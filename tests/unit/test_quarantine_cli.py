"""`mlcycle quarantine`: the rejected rows with file, row, column, value and reason,
counted by reason, filtered, and exported as a CSV that `etl` takes back once fixed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcycle.cli import app
from mlcycle.config import get_settings


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MLCYCLE_SPEC", "MLCYCLE_TRAIN_CONFIG", "MLCYCLE_DATA_DIR", "MLCYCLE_DATASET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    assert CliRunner().invoke(app, ["demo-data", "--rows", "40"]).exit_code == 0
    made = next((tmp_path / "data" / "raw").glob("*.csv"))
    rows = list(csv.DictReader(made.open()))
    rows[2]["Gender"] = "Robot"
    rows[5]["ApplicantIncome"] = "-5"
    rows[7]["Property_Area"] = "Moon"
    with made.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert CliRunner().invoke(app, ["etl"]).exit_code == 0
    yield tmp_path
    get_settings.cache_clear()


def test_quarantine_lists_filters_counts_and_exports_what_etl_takes_back(project: Path) -> None:
    result = CliRunner().invoke(app, ["quarantine", "--json"])
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["total"] == 3 and found["dataset"] == "loan"
    assert {r["line"] for r in found["rows"]} == {4, 7, 9}  # header is line 1
    columns = {e["column"]: e for r in found["rows"] for e in r["errors"]}
    assert columns["Gender"]["value"] == "Robot" and columns["ApplicantIncome"]["value"] == "-5"
    assert sum(found["by_reason"].values()) == 3
    only = json.loads(
        CliRunner().invoke(app, ["quarantine", "--json", "--reason", "minimum"]).stdout
    )
    assert only["total"] == 1 and only["rows"][0]["errors"][0]["column"] == "ApplicantIncome"
    text = CliRunner().invoke(app, ["quarantine", "--export", "fix.csv"])
    assert text.exit_code == 0 and "3 quarantined row(s)" in text.stdout
    fixed = list(csv.DictReader((project / "fix.csv").open()))
    assert len(fixed) == 3
    for row in fixed:
        row.update(Gender="Male", ApplicantIncome="1000", Property_Area="Urban")
    with (project / "fix.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, list(fixed[0]))
        writer.writeheader()
        writer.writerows(fixed)
    again = CliRunner().invoke(app, ["etl", "--source", "fix.csv", "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["inserted"] == 3


def test_status_says_what_is_stored_quarantined_trained_and_served(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.servers import free_port

    monkeypatch.setenv("MLCYCLE_SERVE_PORT", str(free_port()))  # nothing listens there
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["project"] == str(project.resolve()) and state["dataset"] == "loan"
    store = state["store"]
    assert (store["rows"], store["labelled_rows"], store["quarantine"]["rows"]) == (37, 37, 3)
    assert store["batch_statuses"] == {"succeeded": 1} and store["monitoring"] is None
    assert "run `mlcycle train` first" in state["models"]["error"]
    assert state["server"]["reachable"] is False
    text = CliRunner().invoke(app, ["status"])
    assert "37 rows, 37 labelled" in text.stdout and "not reachable" in text.stdout


def test_status_in_an_empty_folder_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MLCYCLE_SPEC", "MLCYCLE_TRAIN_CONFIG", "MLCYCLE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["status", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["store"]["rows"] == 0
    assert list(tmp_path.iterdir()) == []
