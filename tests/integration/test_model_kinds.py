"""Every model kind the training config offers, binary and three-class, is promoted and
served by the serving runtime (onnxruntime, with scikit-learn and pandas blocked in the
server process), and MLflow's own clients (`pyfunc.load_model`, `mlflow models serve`)
give the same labels and class probabilities as `POST /predict` on the raw file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlcycle import registry
from mlcycle.config import get_settings
from mlcycle.datagen import write_demo
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec, parse_spec
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.config import ModelConfig, load_train_config
from mlcycle.train.train import TrainResult, run_train
from tests.data import CONFIG_PATH, TIERS_SPEC, renamed, write_spec
from tests.servers import BLOCKER, UvicornServer, _terminate, _wait_http, free_port

pytestmark = pytest.mark.integration

PARAMS = {
    "logistic_regression": {"max_iter": 1000},
    "hist_gradient_boosting": {"max_iter": 60},
    "random_forest": {"n_estimators": 60, "min_samples_leaf": 3},
    "lightgbm": {"n_estimators": 60, "num_leaves": 15},
}


@dataclass
class Trained:
    spec: DatasetSpec
    result: TrainResult
    raw: Path
    tracking: str


def _train(spec: DatasetSpec, kind: str, root: Path, tracking: str, rows: int) -> Trained:
    settings = get_settings().model_copy(
        update={"mlflow_tracking_uri": tracking, "data_dir": root / "data", "mongo_uri": None}
    )
    cfg = load_train_config(CONFIG_PATH)
    cfg = cfg.model_copy(
        update={"model": ModelConfig.model_validate({"kind": kind, "params": PARAMS[kind]})}
    )
    store = EmbeddedStore(settings.embedded_store_path)
    try:
        raw = write_demo(spec, root / "raw", rows, seed=7)
        run_etl(spec, raw, store)
        result = run_train(settings, spec, cfg, store)
    finally:
        store.close()
    return Trained(spec, result, raw, tracking)


def _case(name: str) -> tuple[DatasetSpec, str]:
    dataset, kind = name.split(":")
    suffix = uuid.uuid4().hex[:6]
    if dataset == "tiers":
        return parse_spec({**TIERS_SPEC, "name": f"tiers{suffix}"}), kind
    from mlcycle.spec import load_spec, packaged

    loan = load_spec(packaged("datasets/loan.yaml"))
    return renamed(loan, f"loan-{kind}-{suffix}", experiment=f"loan-{kind}-{suffix}"), kind


@pytest.fixture(
    scope="module",
    params=[
        "loan:hist_gradient_boosting",
        "loan:random_forest",
        "tiers:logistic_regression",
        "tiers:random_forest",
        "tiers:lightgbm",
        "loan:lightgbm",
    ],
)
def trained(
    request: pytest.FixtureRequest, mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    spec, kind = _case(request.param)
    root = tmp_path_factory.mktemp(request.param.replace(":", "-"))
    return _train(spec, kind, root, mlflow_server.uri, 1500)


@pytest.fixture(scope="module")
def tiers_boosting(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    spec, kind = _case("tiers:hist_gradient_boosting")
    return _train(spec, kind, tmp_path_factory.mktemp("tiers-hgb"), mlflow_server.uri, 1500)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def test_each_kind_is_promoted_and_served_without_scikit_learn(
    trained: Trained, tmp_path: Path
) -> None:
    _check_served(trained, tmp_path)


def test_three_class_boosting_is_served_alike_by_the_api_and_mlflow_models_serve(
    tiers_boosting: Trained, tmp_path: Path
) -> None:
    _check_served(tiers_boosting, tmp_path)
    _check_models_serve(tiers_boosting, tmp_path)


def _check_served(trained: Trained, tmp_path: Path) -> None:
    spec, result = trained.spec, trained.result
    assert result.decision["promote"] is True, result.decision
    client = MlflowClient(trained.tracking)
    version = client.get_model_version(spec.registered_model, result.version)
    assert version.tags[registry.RUNTIME_TAG] == "onnx"
    assert "promoted" in (version.description or "")
    run = client.get_run(result.run_id)
    assert 0 <= run.data.metrics["onnx_max_abs_diff"] <= 1e-5
    labels = spec.target.label_order if spec.target else []
    multiclass = len(labels) > 2
    for metric in ("accuracy", "f1", "roc_auc", "log_loss"):
        assert np.isfinite(result.metrics[metric])
    assert result.metrics["roc_auc"] > result.baseline["roc_auc"]

    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    server = UvicornServer(
        {
            "PYTHONPATH": str(tmp_path),
            "MLFLOW_TRACKING_URI": trained.tracking,
            "MLCYCLE_DATA_DIR": str(tmp_path / "serve"),
            "MLCYCLE_SPEC": str(write_spec(spec, tmp_path / "spec.yaml")),
            "MLCYCLE_RELOAD_INTERVAL": "0",
            "MONGO_URI": "",
        },
        tmp_path / "srv",
    ).start()
    try:
        raw = pd.read_csv(trained.raw)
        assert spec.target is not None
        features = raw.drop(columns=[spec.target.column])
        resp = httpx.post(server.url + "/predict", json={"records": _records(features)}, timeout=60)
        assert resp.status_code == 200, resp.text
        preds = resp.json()["predictions"]
        explained = httpx.post(
            server.url + "/predict?explain=true", json={"records": _records(features)}, timeout=60
        )
        assert explained.status_code == 200, explained.text
        info = httpx.get(server.url + "/model", timeout=10).json()
        assert info["runtime"] == "onnx" and info["labels"] == labels
    finally:
        server.stop()
    log = "".join(p.read_text() for p in (tmp_path / "srv").glob("*.log"))
    assert "not part of the serving install" not in log

    assert all(set(p["probabilities"]) == set(labels) for p in preds)
    api = np.array([[p["probabilities"][k] for k in labels] for p in preds])
    np.testing.assert_allclose(api.sum(axis=1), 1.0, atol=1e-5)
    if multiclass:
        assert {p["label"] for p in preds} == set(labels)  # every class is predicted
        assert all(p["probability"] == p["probabilities"][p["label"]] for p in preds)

    # MLflow's pyfunc on the raw file as pandas reads it: same labels, same probabilities
    mlflow.set_tracking_uri(trained.tracking)
    model = mlflow.pyfunc.load_model(f"models:/{spec.registered_model}@champion")
    out = model.predict(raw)  # the id and target columns are ignored
    assert out["label"].tolist() == [p["label"] for p in preds]
    mine = out[[f"probability_{k}" for k in labels]].to_numpy()
    assert np.max(np.abs(mine - api)) <= 1e-6
    _check_explained(spec, explained.json()["predictions"], model.predict(raw, {"explain": True}))


def _check_explained(spec: Any, api: list[dict[str, Any]], pyfunc: pd.DataFrame) -> None:
    """Every kind explains itself in the serving install (numpy only), and the pyfunc's
    `explain` param gives the API's numbers."""
    features = spec.numeric_features + spec.categorical_features
    labels = spec.target.label_order
    for p in api:
        assert len(p["reasons"]) <= 4 and all(r["contribution"] < 0 for r in p["reasons"])
    if len(labels) == 2:
        assert all(set(p["contributions"]) == set(features) for p in api)
        np.testing.assert_allclose(pyfunc["base"], [p["base"] for p in api], atol=1e-9)
        for f in features:
            got = pyfunc[f"contribution_{f}"].to_numpy()
            np.testing.assert_allclose(got, [p["contributions"][f] for p in api], atol=1e-9)
        return
    for label in labels:
        np.testing.assert_allclose(
            pyfunc[f"base_{label}"], [p["base"][label] for p in api], atol=1e-9
        )
        for f in features:
            got = pyfunc[f"contribution_{label}_{f}"].to_numpy()
            want = [p["contributions"][label][f] for p in api]
            np.testing.assert_allclose(got, want, atol=1e-9)


def _check_models_serve(trained: Trained, tmp_path: Path) -> None:
    """`mlflow models serve` on the champion: the same labels and probabilities as the
    pyfunc (which `_check_served` holds to /predict's to 1e-6)."""
    spec = trained.spec
    port = free_port()
    log = tmp_path / "models-serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.tracking}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{spec.registered_model}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc, log, "mlflow models serve", 120)
        raw = pd.read_csv(trained.raw).head(200)
        body = {"dataframe_split": json.loads(raw.to_json(orient="split", index=False))}
        resp = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        served = pd.DataFrame(resp.json()["predictions"])
        as_csv = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=raw.to_csv(index=False).encode(),
            headers={"Content-Type": "text/csv"},
            timeout=60,
        )
        assert as_csv.status_code == 200, as_csv.text
        assert pd.DataFrame(as_csv.json()["predictions"]).equals(served)
    finally:
        _terminate(proc)
    mlflow.set_tracking_uri(trained.tracking)
    local = mlflow.pyfunc.load_model(f"models:/{spec.registered_model}@champion").predict(raw)
    assert served["label"].tolist() == local["label"].tolist()
    cols = [c for c in local.columns if c.startswith("probability")]
    assert np.max(np.abs(served[cols].to_numpy() - local[cols].to_numpy())) <= 1e-6


_PLAIN_PREDICT = """
import importlib.util
import sys

import mlflow
import pandas as pd

assert importlib.util.find_spec("mlcycle") is None, "mlcycle is installed in the plain venv"
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.read_csv(sys.argv[2])).to_csv(sys.argv[3], index=False)
model.predict(pd.read_csv(sys.argv[2]), {"explain": True}).to_csv(sys.argv[3] + ".x", index=False)
"""


def test_the_logged_model_predicts_in_a_virtualenv_made_from_its_requirements_alone(
    tiers_boosting: Trained, tmp_path: Path
) -> None:
    """MLflow's plain clients: a fresh virtualenv with only what the model's own
    requirements.txt lists (no mlcycle, no msgspec, no onnxruntime) loads the logged
    model and gives the same answer as this environment."""
    spec = tiers_boosting.spec
    mlflow.set_tracking_uri(tiers_boosting.tracking)
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{spec.registered_model}@champion", dst_path=str(tmp_path / "model")
        )
    )
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert any(r.startswith("mlflow==") for r in requirements), requirements
    venv = tmp_path / "plain"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    uv = Path(sys.executable).parent / "uv"  # what `make install` installs with
    if uv.exists():
        install = [str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
    else:  # (MLCYCLE_INSTALLER=pip)
        subprocess.run([str(venv / "bin" / "python"), "-m", "ensurepip", "-q"], check=True)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(
        [*install, "-r", str(model_dir / "requirements.txt")], check=True, env=clean, timeout=1200
    )
    listed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(bool(u.find_spec('mlcycle')))",
        ],
        capture_output=True,
        text=True,
        env=clean,
        check=True,
    )
    assert listed.stdout.strip() == "False"  # the model's code travels with it
    raw = tmp_path / "raw.csv"
    pd.read_csv(tiers_boosting.raw).head(300).to_csv(raw, index=False)
    out = tmp_path / "out.csv"
    script = tmp_path / "plain_predict.py"
    script.write_text(_PLAIN_PREDICT)
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(script), str(model_dir), str(raw), str(out)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plain = pd.read_csv(out)
    local = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.read_csv(raw))
    assert plain["label"].astype(str).tolist() == local["label"].astype(str).tolist()
    cols = [c for c in local.columns if c.startswith("probability")]
    assert np.max(np.abs(plain[cols].to_numpy() - local[cols].to_numpy())) <= 1e-9
    # explanations too, with nothing but the model's requirements (numpy does the work)
    explained = pd.read_csv(f"{out}.x")
    mine = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.read_csv(raw), {"explain": True})
    parts = [c for c in mine.columns if c.startswith(("base_", "contribution_"))]
    assert len(parts) == len(spec.target.label_order) * (
        1 + len(spec.numeric_features + spec.categorical_features)
    )
    np.testing.assert_allclose(explained[parts].to_numpy(), mine[parts].to_numpy(), atol=1e-9)
