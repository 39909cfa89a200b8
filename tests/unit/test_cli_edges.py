"""The CLI's rough edges an operator meets: a taken port, flags in `--help`, shell
completion, library warnings, and where a training run's page is."""

from __future__ import annotations

import logging
import socket
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcycle.cli import app, render
from mlcycle.logging_setup import configure_logging
from mlcycle.train.train import TrainResult

runner = CliRunner()


def test_serve_on_a_taken_port_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output
    assert "Errno" not in result.output and "Traceback" not in result.output


def test_flags_show_no_value_type_in_help() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "--again" in result.output and "--json" in result.output
    assert "<bool>" not in result.output
    assert "<int>" in runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "120"}).output


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "_mlcycle_completion" in result.output or "complete" in result.output


def test_library_warnings_are_debug_lines_without_colour_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = UserWarning("\x1b[33mAdd type hints\x1b[0m")
    logging.captureWarnings(False)  # (pytest restored `showwarning` after earlier tests)
    configure_logging("INFO")
    try:  # (pytest records warnings itself: the shown path is called directly)
        warnings.showwarning(message, UserWarning, "lib.py", 1)
        assert "type hints" not in capsys.readouterr().err
        configure_logging("DEBUG")
        warnings.showwarning(message, UserWarning, "lib.py", 1)
        err = capsys.readouterr().err
        assert "DEBUG" in err and "Add type hints" in err and "\x1b[" not in err
    finally:
        logging.captureWarnings(False)
        configure_logging("INFO")


def _result(promote: bool, url: str | None) -> TrainResult:
    return TrainResult(
        run_id="abc123",
        run_url=url,
        run_view=None if url else "mlflow ui --backend-store-uri sqlite:///x/mlflow.db",
        model_name="loan-approval",
        version="2",
        rows=100,
        data_hash="f" * 64,
        metrics={"roc_auc": 0.7},
        baseline={"roc_auc": 0.5},
        cv={k: 0.5 for k in ("cv_accuracy_mean", "cv_accuracy_std")}
        | {k: 0.5 for k in ("cv_roc_auc_mean", "cv_roc_auc_std")},
        champion_before={"version": "1"},
        decision={"promote": promote, "reason": "because"},
        champion_after="2" if promote else "1",
        params={"cv_folds": 5},
        evaluation={},
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000/#/experiments/1/runs/abc123", None])
def test_a_rejected_candidate_names_its_own_run_apart_from_the_champion(
    url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    render.train_result(_result(promote=False, url=url))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "champion: v1" in lines
    candidate = next(line for line in lines if line.startswith("candidate v2:"))
    assert (url or "run abc123 (view with: mlflow ui") in candidate
    assert not any(line.startswith("champion:") and "abc123" in line for line in lines)
