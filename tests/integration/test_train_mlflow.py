"""The training stage against a real `mlflow server` (and FerretDB for the data)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlcycle import registry
from mlcycle.config import Settings, get_settings
from mlcycle.errors import ModelNotFound, TrackingUnavailable
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train.config import ModelConfig, TrainConfig, load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, counts, renamed

pytestmark = pytest.mark.integration


@pytest.fixture
def tracked(mlflow_server, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def spec(spec: DatasetSpec) -> DatasetSpec:
    """A fresh registered-model name per test keeps tests independent on one server."""
    return renamed(spec, f"loan-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def cfg() -> TrainConfig:
    return load_train_config(CONFIG_PATH)


@pytest.fixture
def mongo_loan_store(spec: DatasetSpec, loan_dir: Path, ferretdb) -> Store:
    from mlcycle.store.mongo import MongoStore

    store = MongoStore(ferretdb.uri, f"train{uuid.uuid4().hex[:8]}")
    run_etl(spec, loan_dir, store)
    return store


def test_train_logs_registers_and_promotes_version_1(
    tracked: Settings, spec: DatasetSpec, cfg: TrainConfig, mongo_loan_store: Store, loan_dir: Path
) -> None:
    result = run_train(tracked, spec, cfg, mongo_loan_store)
    assert result.version == "1"
    assert result.champion_after == "1"
    assert result.rows == counts(loan_dir, spec).train
    assert result.decision["promote"] is True
    assert result.metrics["roc_auc"] > result.baseline["roc_auc"]
    assert result.run_url.startswith(tracked.tracking_uri)

    client = MlflowClient(tracked.tracking_uri)
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "Loan_Approval_Experiment"
    assert run.data.params["model.max_iter"] == "1000"  # the real estimator's value
    assert run.data.params["model.kind"] == "logistic_regression"
    for key in (
        "test_accuracy",
        "test_roc_auc",
        "cv_accuracy_mean",
        "cv_accuracy_std",
        "baseline_accuracy",
    ):
        assert key in run.data.metrics
    tags = run.data.tags
    assert tags["mlcycle.data_hash"] == result.data_hash
    assert tags["mlcycle.row_count"] == str(result.rows)
    assert tags["mlcycle.spec_hash"] == spec.fingerprint
    assert tags["mlcycle.etl_batch_ids"]
    assert tags["mlcycle.seed"] == "42"
    assert tags["mlflow.source.git.commit"] == tags["mlcycle.git_commit"]
    assert all(value != "" for value in tags.values()), "an empty tag"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/roc_curve.png",
        "evaluation/metrics.json",
        "evaluation/feature_weights.csv",
    } <= artifacts
    version = client.get_model_version(spec.registered_model, "1")
    assert version.tags["mlcycle.gate_decision"] == "promoted"

    # interoperability: the registered champion loads with plain MLflow and predicts the
    # raw file as pandas reads it (int64 and float64 numbers, text, gaps, the id column)
    raw = pd.read_csv(loan_dir / "test.csv")
    model = mlflow.pyfunc.load_model(f"models:/{spec.registered_model}@champion")
    preds = model.predict(raw)
    assert len(preds) == len(raw)
    assert list(preds.columns) == ["label", "probability", "probability_N", "probability_Y"]
    assert set(preds["label"]) <= {"Y", "N"}
    np.testing.assert_allclose(preds["probability"], preds["probability_Y"])
    np.testing.assert_allclose(preds["probability_N"] + preds["probability_Y"], 1.0)
    assert ((preds["label"] == "Y") == (preds["probability_Y"] > 0.5)).all()
    # each run records its training data as an input: the store and its data hash
    run = client.get_run(result.run_id)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == spec.name and inp.dataset.source_type == "mlcycle_store"
    assert json.loads(inp.dataset.source)["data_hash"] == result.data_hash
    assert {t.key: t.value for t in inp.tags}.get("mlflow.data.context") == "training"


def test_retraining_on_unchanged_data_reproduces_the_metrics(
    tracked: Settings, spec: DatasetSpec, cfg: TrainConfig, loan_store: Store
) -> None:
    first = run_train(tracked, spec, cfg, loan_store)
    skipped = run_train(tracked, spec, cfg, loan_store)  # the same model: nothing registered
    assert skipped.skipped and skipped.version is None and skipped.champion_after == "1"
    second = run_train(tracked, spec, cfg, loan_store, again=True)
    assert second.version == "2"
    assert second.metrics == first.metrics
    assert second.cv == first.cv
    assert second.data_hash == first.data_hash
    # the champion is re-scored on the candidate's hold-out: identical model, identical numbers
    assert second.champion_before == {"version": "1", "metrics": first.metrics}
    assert second.champion_after == "2"


def test_a_model_that_predicts_one_class_is_refused_by_the_gate(
    tracked: Settings, spec: DatasetSpec, cfg: TrainConfig, loan_store: Store
) -> None:
    good = run_train(tracked, spec, cfg, loan_store)
    bad_cfg = cfg.model_copy(update={"model": ModelConfig(kind="majority")})
    bad = run_train(tracked, spec, bad_cfg, loan_store)
    assert bad.decision["promote"] is False
    assert "does not beat the majority-class baseline" in bad.decision["reason"]
    assert bad.champion_after == good.version
    client = MlflowClient(tracked.tracking_uri)
    assert (
        client.get_model_version(spec.registered_model, bad.version).tags["mlcycle.gate_decision"]
        == "rejected"
    )
    # the first ever candidate is refused too when it is no better than the baseline
    fresh = renamed(spec, spec.registered_model + "-x")
    assert run_train(tracked, fresh, bad_cfg, loan_store).champion_after is None


def test_promote_and_rollback_move_the_alias(
    tracked: Settings, spec: DatasetSpec, cfg: TrainConfig, loan_store: Store
) -> None:
    run_train(tracked, spec, cfg, loan_store)
    run_train(tracked, spec, cfg, loan_store, again=True)  # identical metrics: promoted
    client = registry.connect(tracked)
    assert registry.champion(client, spec.registered_model).version == "2"
    assert registry.rollback(client, spec.registered_model) == ("2", "1")
    assert registry.champion(client, spec.registered_model).version == "1"
    with pytest.raises(ModelNotFound, match="first champion"):
        registry.rollback(client, spec.registered_model)
    with pytest.raises(ModelNotFound, match="no version 99"):
        registry.get_version(client, spec.registered_model, version="99")


def test_unreachable_tracking_server_fails_fast_and_registers_nothing(
    spec: DatasetSpec, cfg: TrainConfig, loan_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    get_settings.cache_clear()
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        run_train(get_settings(), spec, cfg, loan_store)


def test_embedded_tracking_needs_no_server(
    spec: DatasetSpec, cfg: TrainConfig, loan_store: Store
) -> None:
    settings = get_settings()
    assert settings.tracking_uri.startswith("sqlite:///")
    result = run_train(settings, spec, cfg, loan_store)
    assert result.champion_after == "1"
    assert (settings.data_dir / "mlflow.db").exists()
    assert any(settings.artifact_root.rglob("MLmodel"))


def test_a_candidate_with_another_contract_is_never_promoted_automatically(
    tracked: Settings, spec: DatasetSpec, cfg: TrainConfig, loan_store: Store, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mlcycle.cli import app
    from tests.data import write_spec

    first = run_train(tracked, spec, cfg, loan_store)
    fewer = renamed(spec, spec.registered_model, features=spec.feature_columns[:-1])
    assert fewer.contract_hash != spec.contract_hash
    second = run_train(tracked, fewer, cfg, loan_store)
    assert second.decision["promote"] is False
    assert "feature contract differs" in second.decision["reason"]
    assert second.champion_after == first.version
    client = MlflowClient(tracked.tracking_uri)
    version = client.get_model_version(spec.registered_model, second.version)
    assert version.tags["mlcycle.contract_hash"] == fewer.contract_hash
    assert version.description.startswith("gate: rejected")

    path = write_spec(fewer, tmp_path / "spec.yaml")
    runner = CliRunner()
    refused = runner.invoke(app, ["promote", second.version, "--spec", str(path), "--force"])
    assert refused.exit_code == 2 and "--reason" in refused.stderr
    forced = runner.invoke(
        app,
        [
            "promote",
            second.version,
            "--spec",
            str(path),
            "--force",
            "--reason",
            "new schema, checked by hand",
        ],
    )
    assert forced.exit_code == 0, forced.output
    version = client.get_model_version(spec.registered_model, second.version)
    assert version.tags["mlcycle.forced_reason"] == "new schema, checked by hand"
    assert registry.champion(client, spec.registered_model).version == second.version
