"""A second dataset with another schema (an integer 0/1 target) runs etl -> train ->
serve beside the loan data, in the same store and the same MLflow, touching nothing of
the loan's."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from mlcycle import registry
from mlcycle.config import get_settings
from mlcycle.datagen import write_demo
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec, parse_spec
from mlcycle.store.mongo import MongoStore
from mlcycle.train.config import load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, CREDIT_SPEC, renamed, write_spec
from tests.servers import UvicornServer

pytestmark = pytest.mark.integration


def test_two_datasets_share_a_store_and_mlflow_without_touching_each_other(
    spec: DatasetSpec, ferretdb: Any, mlflow_server: Any, tmp_path: Path
) -> None:
    credit = parse_spec({**CREDIT_SPEC, "name": f"credit{uuid.uuid4().hex[:6]}"})
    loan = renamed(spec, f"loan-{uuid.uuid4().hex[:8]}")
    settings = get_settings().model_copy(
        update={"mlflow_tracking_uri": mlflow_server.uri, "data_dir": tmp_path / "data"}
    )
    store = MongoStore(ferretdb.uri, f"two{uuid.uuid4().hex[:8]}", timeout_ms=3000, retries=2)
    cfg = load_train_config(CONFIG_PATH)

    run_etl(loan, write_demo(loan, tmp_path / "loan", 600, seed=1), store)
    first = run_train(settings, loan, cfg, store)
    assert first.champion_after == "1"

    made = write_demo(credit, tmp_path / "credit", 800, seed=2)
    assert run_etl(credit, made, store).inserted == 800
    trained = run_train(settings, credit, cfg, store)
    assert trained.model_name == credit.name and trained.version == "1"
    assert trained.champion_after == "1"

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(trained.run_id)
    assert client.get_experiment(run.info.experiment_id).name == credit.name
    assert registry.champion(registry.connect(settings), loan.registered_model).version == "1"
    assert len(client.search_model_versions(f"name='{loan.registered_model}'")) == 1
    assert store.count(loan.name) == 600 and store.count(credit.name) == 800
    for tag, value in run.data.tags.items():
        assert value != "", f"empty tag {tag}"

    spec_file = write_spec(credit, tmp_path / "credit.yaml")
    server = UvicornServer(
        {
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "MLCYCLE_DATA_DIR": str(tmp_path / "serve"),
            "MLCYCLE_SPEC": str(spec_file),
            "MLCYCLE_RELOAD_INTERVAL": "0",
        },
        tmp_path / "srv",
    ).start()
    try:
        body = {
            "client_id": "C1",
            "age": 35,
            "income": 1200.0,
            "region": "south",
            "owns_home": False,
        }
        resp = httpx.post(server.url + "/predict", json=body, timeout=10)
        assert resp.status_code == 200, resp.text
        (pred,) = resp.json()["predictions"]
        assert pred["label"] in ("0", "1") and 0 <= pred["probability"] <= 1
        assert resp.json()["model"] == {"name": credit.name, "version": "1"}
        schema = httpx.get(server.url + "/openapi.json").json()
        assert f"{credit.name.title()}Record" in str(schema)
        assert "LoanRecord" not in str(schema)
        bad = httpx.post(server.url + "/predict", json={**body, "Gender": "Male"}, timeout=10)
        assert bad.status_code == 422
    finally:
        server.stop()
    store.close()
