"""A version the serving runtime can never load is never made champion, forced or not,
and rollback never lands on one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcycle import registry
from mlcycle.cli import app
from mlcycle.config import get_settings
from mlcycle.spec import DatasetSpec
from tests.data import embedded_settings, train_demo

pytestmark = pytest.mark.integration


def test_unservable_versions_are_never_champion(
    spec: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    settings = embedded_settings(tmp_path)
    monkeypatch.setenv("MLCYCLE_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    train_demo(spec, settings, 300)
    client = registry.connect(settings)
    name = spec.registered_model
    first = registry.champion(client, name)
    assert first is not None and first.version == "1"

    mlflow.set_experiment(spec.experiment_name)
    with mlflow.start_run() as run:  # a run with a model but no serving bundle
        (tmp_path / "note.txt").write_text("no graph here")
        mlflow.log_artifact(str(tmp_path / "note.txt"), artifact_path="model")
    broken = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    good = client.create_model_version(name, f"runs:/{first.run_id}/model", first.run_id)
    assert registry.unservable(client, name, broken.version) is not None
    assert registry.unservable(client, name, good.version) is None

    out = CliRunner().invoke(app, ["promote", str(broken.version), "--force", "--reason", "try it"])
    assert out.exit_code == 2, out.output
    assert "cannot be made champion" in out.output and "serving bundle" in out.output
    assert registry.champion(client, name).version == "1"  # type: ignore[union-attr]

    # a history that names an unservable version (written before this rule): skipped
    client.set_model_version_tag(name, broken.version, registry.TAG + "previous_champion", "1")
    registry.set_champion(client, name, good.version, broken.version)
    out = CliRunner().invoke(app, ["rollback"])
    assert out.exit_code == 0, out.output
    assert registry.champion(client, name).version == "1"  # type: ignore[union-attr]
