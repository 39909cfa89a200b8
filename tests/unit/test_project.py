"""Which project, spec and config a command uses: found by walking up from the working
folder, chosen explicitly when there is more than one, never the bundled loan spec inside
a project, and always said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcycle.cli import app
from mlcycle.config import get_settings
from mlcycle.spec import packaged

TICKETS = """\
name: tickets
id_column: ticket_id
target: {column: urgent, labels: {"yes": 1, "no": 0}, positive: "yes"}
columns:
  ticket_id: {type: string, nullable: false}
  channel: {type: category, values: [mail, chat]}
  words: {type: float}
  urgent: {type: string, values: ["yes", "no"]}
"""


def _project(root: Path, *specs: str, marker: str | None = "") -> Path:
    """A project folder with the named specs (tickets-shaped) and, unless `marker` is
    None, an `mlcycle.yaml` holding `marker`."""
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    for name in specs:
        (root / "datasets" / f"{name}.yaml").write_text(TICKETS.replace("tickets", name))
    if marker is not None:
        (root / "mlcycle.yaml").write_text(marker)
    return root


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    for var in ("MLCYCLE_SPEC", "MLCYCLE_TRAIN_CONFIG", "MLCYCLE_DATA_DIR", "MLCYCLE_DATASET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLCYCLE_LOG_LEVEL", "DEBUG")  # the choice is a debug line off a terminal

    def run(cwd: Path, *args: str, env: dict[str, str] | None = None):
        monkeypatch.chdir(cwd)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args))
        finally:
            get_settings.cache_clear()

    return run


def test_a_users_only_spec_is_used_from_any_subfolder_never_the_loan_one(
    tmp_path: Path, cli
) -> None:
    root = _project(tmp_path / "proj", "tickets", marker=None)  # found by its layout
    deep = root / "data" / "raw" / "2026"
    deep.mkdir(parents=True)
    (deep / "t.csv").write_text("ticket_id,channel,words,urgent\nT1,mail,12,yes\nT2,chat,3,no\n")
    result = cli(deep, "etl", "--source", str(deep), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "tickets" and summary["inserted"] == 2
    assert "Loan_ID" not in result.stderr
    assert f"project {root.resolve()} (datasets/)" in result.stderr
    assert "the only spec in" in result.stderr
    # the store is the project's, not a data/ folder under the working one
    assert (root / "data" / "store.sqlite3").is_file() and not (deep / "data").exists()


def test_two_specs_ask_which_and_every_way_of_naming_one_answers(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, "tickets", "claims")
    asked = cli(root, "preprocess")
    assert asked.exit_code == 2
    assert "2 dataset specs" in asked.stderr and "--dataset NAME" in asked.stderr
    assert "claims, tickets" in asked.stderr
    for args, env in (
        (["--dataset", "claims"], {}),
        ([], {"MLCYCLE_DATASET": "claims"}),
        (["--spec", str(root / "datasets" / "claims.yaml")], {}),
    ):
        said = cli(root, "doctor", "--json", *args, env=env) if not args else None
        result = cli(root, "preprocess", *args, env=env)
        assert "claims.yaml" in result.stderr, (args, env, result.stderr)
        assert "tickets.yaml" not in result.stderr
        if said is not None:
            checks = {c["name"]: c for c in json.loads(said.stdout)["checks"]}
            assert "claims.yaml" in checks["dataset spec"]["detail"]
    monkeypatch.delenv("MLCYCLE_DATASET")
    (root / "mlcycle.yaml").write_text("dataset: tickets\n")
    by_file = cli(root, "preprocess")
    assert "tickets.yaml" in by_file.stderr and "`dataset:` in" in by_file.stderr
    wrong = cli(root, "preprocess", "--dataset", "loan")
    assert wrong.exit_code == 2
    assert "dataset 'loan'" in wrong.stderr and "it holds: claims, tickets" in wrong.stderr


def test_a_project_without_a_spec_and_a_bad_project_file_are_bad_input(tmp_path: Path, cli) -> None:
    (tmp_path / "mlcycle.yaml").write_text("# nothing named\n")
    empty = cli(tmp_path, "preprocess")
    assert empty.exit_code == 2 and "has no dataset spec" in empty.stderr
    (tmp_path / "mlcycle.yaml").write_text("datasets: [a]\n")
    bad = cli(tmp_path, "preprocess")
    assert bad.exit_code == 2 and "unknown key 'datasets'" in bad.stderr


def test_outside_any_project_the_bundled_example_is_used_and_said(tmp_path: Path, cli) -> None:
    result = cli(tmp_path, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert "none at or above here" in checks["project"]["detail"]
    assert str(packaged("datasets/loan.yaml")) in checks["dataset spec"]["detail"]
    other = cli(tmp_path, "preprocess", "--dataset", "tickets")
    assert other.exit_code == 2 and "no project was found" in other.stderr


def test_the_training_config_is_the_datasets_own_then_the_projects(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, "tickets", "claims", marker="dataset: claims\n")
    (root / "configs").mkdir()
    (root / "configs" / "train.yaml").write_text((packaged("configs/train.yaml")).read_text())
    monkeypatch.chdir(root)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.train_config_choice().path == root / "configs" / "train.yaml"
        own = root / "configs" / "claims.yaml"
        own.write_text(packaged("configs/train.yaml").read_text())
        assert settings.train_config_choice().path == own
        tickets = settings.model_copy(update={"dataset": "tickets"})
        assert tickets.train_config_choice().path == root / "configs" / "train.yaml"
    finally:
        get_settings.cache_clear()
