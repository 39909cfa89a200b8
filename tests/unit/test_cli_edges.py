"""The CLI's rough edges an operator meets: a taken port, flags in `--help`, shell
completion, library warnings, and where a training run's page is."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
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
    # its own process: completion reads the program name and environment of a real one
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlcycle"), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    assert "_mlcycle_completion" in result.stdout and "_MLCYCLE_COMPLETE" in result.stdout


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


def test_long_steps_say_what_they_do_and_how_long_it_took_and_quiet_hides_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlcycle.logging_setup import step

    log = logging.getLogger("mlcycle.test.steps")
    with caplog.at_level(logging.INFO, logger="mlcycle.test.steps"), step(log, "counting"):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "mlcycle.test.steps"]
    assert lines[0] == "counting ..." and re.fullmatch(r"counting: done in \d+\.\d s", lines[1])
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="mlcycle.test.steps"),
        pytest.raises(ValueError),
        step(log, "failing"),
    ):
        raise ValueError
    assert re.fullmatch(r"failing: stopped after \d+\.\d s", caplog.records[-1].getMessage())
    assert "--quiet" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output


def test_quiet_keeps_the_error_and_drops_the_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MLFLOW_TRACKING_URI", "MONGO_URI", "MLCYCLE_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    loud = runner.invoke(app, ["train"])
    quiet = runner.invoke(app, ["--quiet", "train"])
    assert loud.exit_code == quiet.exit_code == 1
    assert "reading the labelled rows of 'loan' ..." in loud.output
    assert "reading the labelled rows" not in quiet.output
    assert "no labelled rows" in quiet.output
