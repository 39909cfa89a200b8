"""What a newcomer hits first: the CLI from any folder, clear one-line errors with the
next command, and demo rows that never mix with a user's own files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlcycle import __version__
from mlcycle.cli import app
from mlcycle.config import get_settings
from mlcycle.spec import packaged
from tests.servers import REPO, free_port

runner = CliRunner()


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    base = {
        k: v for k, v in os.environ.items() if k not in ("MLCYCLE_SPEC", "MLCYCLE_TRAIN_CONFIG")
    }
    return subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_works_alone(tmp_path: Path) -> None:
    out = _cli("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == __version__


def test_packaged_spec_and_config_are_the_defaults_outside_a_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLCYCLE_SPEC")
    monkeypatch.delenv("MLCYCLE_TRAIN_CONFIG")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.spec_path == packaged("datasets/loan.yaml")
    assert settings.train_config_path == packaged("configs/train.yaml")
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "datasets" / "loan.yaml").is_file()
    assert (tmp_path / "configs" / "train.yaml").is_file()
    assert (tmp_path / ".env").is_file()
    assert (tmp_path / "data" / "raw").is_dir()
    get_settings.cache_clear()
    own = tmp_path.resolve() / "datasets" / "loan.yaml"
    assert get_settings().spec_path == own  # the project's own now
    assert (tmp_path / "mlcycle.yaml").is_file()
    again = runner.invoke(app, ["init"])
    assert "kept" in again.stdout and "created" not in again.stdout


def test_etl_on_an_empty_raw_folder_says_so_and_names_the_next_command(tmp_path: Path) -> None:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    out = _cli("etl", cwd=tmp_path, env={"MLCYCLE_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2
    assert "no data files" in out.stderr and "mlcycle demo-data" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data" / "store.sqlite3").exists()


def test_serve_without_a_model_says_to_train_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = _cli(
        "serve", "--port", str(free_port()), cwd=tmp_path, env={"MLCYCLE_DATA_DIR": str(data)}
    )
    assert out.returncode == 2
    assert "mlcycle train" in out.stderr
    assert "serving on" not in out.stdout
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (data / "mlflow.db").exists()


@pytest.mark.slow
def test_doctor_has_no_side_effects_and_checks_rows_and_champion(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"MLCYCLE_DATA_DIR": str(data)}
    first = _cli("doctor", cwd=tmp_path, env=env)
    assert first.returncode == 1
    assert not data.exists(), "doctor created files"
    assert "run `mlcycle etl`" in first.stdout and "run `mlcycle train`" in first.stdout
    assert _cli("demo-data", "--rows", "300", cwd=tmp_path, env=env).returncode == 0
    assert _cli("etl", cwd=tmp_path, env=env).returncode == 0
    assert _cli("train", cwd=tmp_path, env=env, timeout=300).returncode == 0
    ready = _cli("doctor", cwd=tmp_path, env=env)
    assert ready.returncode == 0, ready.stdout
    assert "300 loan rows" in ready.stdout
    assert "loan-approval v1" in ready.stdout


@pytest.mark.slow
def test_an_unreachable_mongodb_fails_within_10s_one_line_per_retry(tmp_path: Path) -> None:
    env = {
        "MLCYCLE_DATA_DIR": str(tmp_path / "data"),
        "MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/",
    }
    assert _cli("demo-data", "--rows", "50", cwd=tmp_path, env=env).returncode == 0
    out = _cli("etl", cwd=tmp_path, env=env)
    assert out.returncode == 1
    retries = [line for line in out.stderr.splitlines() if "retrying in" in line]
    settings = get_settings()
    assert len(retries) == settings.store_retries - 1, out.stderr
    # bounded by what the run says it does, not by a clock: every attempt's timeout and
    # every announced wait add up to under 10 s
    waits = [float(line.rsplit("retrying in ", 1)[1].split("s")[0]) for line in retries]
    budget = settings.store_retries * settings.store_timeout_ms / 1000 + sum(waits)
    assert budget < 10, (budget, out.stderr)
    assert all(len(line) < 300 for line in out.stderr.splitlines()), out.stderr
    assert "Topology Description" not in out.stderr
    assert "is unreachable" in out.stderr and "Traceback" not in out.stderr


def test_demo_rows_are_never_mixed_into_a_users_files(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "mine.jsonl").write_text(json.dumps({"Loan_ID": "U1"}) + "\n")
    out = runner.invoke(app, ["demo-data", "--if-empty", "--out", str(raw)])
    assert out.exit_code == 0
    assert sorted(p.name for p in raw.iterdir()) == ["mine.jsonl"]
    (raw / "mine.jsonl").unlink()
    assert runner.invoke(app, ["demo-data", "--if-empty", "--out", str(raw)]).exit_code == 0
    assert [p.name for p in raw.iterdir()] == ["loan_synthetic.csv"]


def test_make_setup_leaves_a_users_parquet_file_alone(tmp_path: Path) -> None:
    """`make setup` itself (with this interpreter standing in for the project virtualenv)."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    pd.DataFrame({"Loan_ID": ["U1"]}).to_parquet(raw / "mine.parquet")
    (tmp_path / ".env").write_text("")
    stamp = tmp_path / "stamp"
    stamp.write_text("")
    out = subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "setup", f"STAMP={stamp}", f"PY={sys.executable}"],
        cwd=tmp_path,
        env={**os.environ, "MLCYCLE_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no demo rows written" in out.stdout
    assert sorted(p.name for p in raw.iterdir()) == ["mine.parquet"]
