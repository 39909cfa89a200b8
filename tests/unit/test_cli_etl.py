"""The CLI contract: summaries, --json, exit codes (0 ok, 1 failed run, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mlcycle.cli import app
from mlcycle.spec import DatasetSpec
from tests.data import counts
from tests.integration.test_etl_pipeline import write_dirty

runner = CliRunner()


def test_etl_json_summary_and_idempotent_rerun(loan_dir: Path, spec: DatasetSpec) -> None:
    n = counts(loan_dir, spec).total
    first = runner.invoke(app, ["etl", "--source", str(loan_dir), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["rows_read"], summary["rejected"], summary["inserted"]) == (n, 0, n)
    second = json.loads(runner.invoke(app, ["etl", "--source", str(loan_dir), "--json"]).stdout)
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, n)


def test_etl_text_summary_names_counts(loan_dir: Path, spec: DatasetSpec) -> None:
    result = runner.invoke(app, ["etl", "--source", str(loan_dir / "train.csv")])
    assert result.exit_code == 0
    assert "train.csv" in result.stdout
    assert f"inserted {counts(loan_dir, spec).train:,}" in result.stdout


def test_structural_error_exits_2_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("Loan_ID;Gender\nLP1;Male\n")
    result = runner.invoke(app, ["etl", "--source", str(path)])
    assert result.exit_code == 2
    assert "semi.csv" in result.stderr
    assert "semicolon" in result.stderr


def test_rejected_share_over_threshold_exits_1(tmp_path: Path) -> None:
    path = write_dirty(tmp_path / "raw")
    result = runner.invoke(app, ["etl", "--source", str(path), "--max-rejected", "0.2", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"
    ok = runner.invoke(app, ["etl", "--source", str(path), "--max-rejected", "0.9"])
    assert ok.exit_code == 0
    assert "quarantine" in ok.stdout


def test_missing_source_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["etl", "--source", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr


def test_bad_spec_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nid_column: id\ncolumns:\n  id: {type: strng, nullable: false}\n")
    result = runner.invoke(app, ["etl", "--spec", str(bad), "--source", str(tmp_path)])
    assert result.exit_code == 2
    assert "columns.id.type" in result.stderr


def test_demo_data_then_etl_runs_offline(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    made = runner.invoke(app, ["demo-data", "--rows", "300", "--seed", "7", "--out", str(out)])
    assert made.exit_code == 0, made.output
    result = json.loads(runner.invoke(app, ["etl", "--source", str(out), "--json"]).stdout)
    assert (result["rows_read"], result["rejected"]) == (300, 0)


def test_doctor_reports_a_missing_raw_folder_and_exits_1() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "raw data folder" in result.stdout
    assert "demo-data" in result.stdout
