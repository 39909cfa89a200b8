"""Monitoring closes the loop on real components: a real `mlflow server`, the API in a
real uvicorn writing its prediction log to the embedded store or FerretDB, the
`mlcycle` CLI as a user runs it, and the dashboard in headless Chromium.

Held-out traffic -> ok, no retraining; labels arrive -> realized accuracy equals a
hand computation on the same rows; shifted traffic -> exactly the shifted features flagged,
exit code 3, the policy retrains and records it; /metrics and GET /monitor show it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mlcycle.datagen import generate
from mlcycle.serve.security import hash_key
from mlcycle.spec import DatasetSpec, parse_spec, value_text
from mlcycle.store.base import Store, predictions_collection
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.mongo import MongoStore
from tests.browser import render
from tests.data import write_spec
from tests.servers import UvicornServer
from tests.servers import mlcycle as cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN, CLIENT = "monitor-admin-key", "monitor-client-key"
BATCH = 25


def open_spec(spec: DatasetSpec, model_name: str) -> DatasetSpec:
    """The loan spec with one more Property_Area value that the demo rows never use: a
    category the contract allows but training never saw, which the API accepts."""
    data = spec.model_dump(mode="json", exclude_none=True)
    data["name"] = "loanmon"
    data["model_name"] = model_name
    data["columns"]["Property_Area"]["values"].append("Riverside")
    return parse_spec(data)


def send(url: str, frame: pd.DataFrame, spec: DatasetSpec) -> None:
    records = [
        {
            k: (None if pd.isna(v) or v == "" else v)
            for k, v in rec.items()
            if k != spec.target_column
        }
        for rec in frame.to_dict("records")
    ]
    with httpx.Client(base_url=url, headers={"X-API-Key": CLIENT}, timeout=30) as client:
        for start in range(0, len(records), BATCH):
            resp = client.post("/predict", json={"records": records[start : start + BATCH]})
            assert resp.status_code == 200, resp.text


def wait_logged(store: Store, spec: DatasetSpec, documents: int) -> None:
    deadline = time.monotonic() + 60
    while store.count(predictions_collection(spec.name)) < documents:
        assert time.monotonic() < deadline, "the prediction log did not arrive in the store"
        time.sleep(0.3)


def monitor(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = cli(env, cwd, "monitor", "--json", *args)
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        pytest.fail(f"not one JSON object on stdout: {out.stdout[:2000]!r} {out.stderr[-3000:]}")


def versions(tracking_uri: str, name: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return len(client.search_model_versions(f"name='{name}'"))


@pytest.mark.parametrize("backend", ["embedded", "mongodb"])
def test_monitoring_closes_the_loop(
    backend: str,
    spec: DatasetSpec,
    mlflow_server: Any,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    mspec = open_spec(spec, f"loan-monitored-{backend}")  # one registry for both runs
    spec_path = write_spec(mspec, tmp_path / "spec.yaml")
    keys = [
        {"name": "ops", "role": "admin", "sha256": hash_key(ADMIN)},
        {"name": "app", "role": "predict", "sha256": hash_key(CLIENT)},
    ]
    env = {
        **os.environ,
        "MLCYCLE_DATA_DIR": str(tmp_path / "data"),
        "MLCYCLE_SPEC": str(spec_path),
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "MLCYCLE_RELOAD_INTERVAL": "1",
        "MLCYCLE_API_KEYS": json.dumps(keys),
        "MONGO_URI": "",
    }
    if backend == "mongodb":
        ferretdb = request.getfixturevalue("ferretdb")
        env["MONGO_URI"] = ferretdb.uri
        env["MLCYCLE_MONGO_DB"] = f"mon{uuid.uuid4().hex[:10]}"
        store: Store = MongoStore(ferretdb.uri, env["MLCYCLE_MONGO_DB"], timeout_ms=3000)
    else:
        store = EmbeddedStore(tmp_path / "data" / "store.sqlite3")

    raw = tmp_path / "raw"
    raw.mkdir()
    generate(mspec, 1500, seed=21).to_csv(raw / "train.csv", index=False)
    for args in (("etl", "--source", str(raw)), ("train",)):
        done = cli(env, tmp_path, *args)
        assert done.returncode == 0, done.stderr[-3000:]

    server = UvicornServer(env, tmp_path / "serve").start()
    try:
        # 1. traffic from the training distribution: ok, and the policy does not retrain
        t0 = datetime.now(UTC)
        held_out = generate(mspec, 600, seed=22)
        send(server.url, held_out, mspec)
        wait_logged(store, mspec, 600 // BATCH)
        code, calm = monitor(env, tmp_path, "--since", t0.isoformat(), "--retrain")
        assert code == 0, calm
        assert calm["window"]["rows"] == 600 and calm["model_version"] == "1"
        assert calm["flagged"] == [], calm["reasons"]
        assert calm["verdict"] == "ok"
        assert calm["retrain"] == {"requested": True, "reason": None, "triggered": False}
        assert versions(mlflow_server.uri, mspec.registered_model) == 1

        # 2. labels arrive for the predicted ids: realized metrics on the matured rows
        labelled = tmp_path / "labels"
        labelled.mkdir()
        held_out.to_csv(labelled / "outcomes.csv", index=False)
        assert cli(env, tmp_path, "etl", "--source", str(labelled)).returncode == 0
        code, matured = monitor(env, tmp_path, "--since", t0.isoformat())
        perf = matured["performance"]
        truth = dict(zip(held_out["Loan_ID"], held_out["Loan_Status"].map(value_text), strict=True))
        pairs = [
            (label, truth[i])
            for doc in store.find(predictions_collection(mspec.name))
            for i, label in zip(doc["ids"], doc["labels"], strict=True)
        ]
        assert perf["matured"] == len(pairs) == 600
        assert perf["accuracy"] == sum(p == t for p, t in pairs) / len(pairs)
        assert perf["accuracy_ci"][0] < perf["accuracy"] < perf["accuracy_ci"][1]
        assert perf["validation"]["roc_auc"] > 0.5 and 0.0 <= perf["roc_auc"] <= 1.0
        _fairness_is_the_logs(matured["fairness"]["Gender"], store, mspec, truth)

        # 3. shifted traffic: incomes multiplied, Married flipped, a new Property_Area
        t1 = datetime.now(UTC)
        rng = np.random.default_rng(4)
        shifted = generate(mspec, 600, seed=23)
        shifted["ApplicantIncome"] = pd.to_numeric(shifted["ApplicantIncome"]) * 3
        shifted["Married"] = shifted["Married"].map({"Yes": "No", "No": "Yes"}).fillna("")
        shifted.loc[rng.random(len(shifted)) < 0.3, "Property_Area"] = "Riverside"
        send(server.url, shifted, mspec)
        wait_logged(store, mspec, 2 * 600 // BATCH)
        html = tmp_path / "report.html"
        code, drift = monitor(
            env, tmp_path, "--since", t1.isoformat(), "--retrain", "--html", str(html)
        )
        assert code == 3, drift["reasons"]
        assert drift["verdict"] == "drift"
        assert drift["flagged"] == ["ApplicantIncome", "Married", "Property_Area"]
        assert all(drift["features"][k]["psi"] > 0.25 for k in drift["flagged"])
        assert drift["features"]["Property_Area"]["unseen"]["values"].keys() == {"Riverside"}
        assert drift["retrain"]["triggered"] is True and drift["retrain"]["version"] == "2"
        assert "ApplicantIncome" in drift["retrain"]["reason"]
        assert versions(mlflow_server.uri, mspec.registered_model) == 2

        # 4. where operators look: gauges, the dashboard route, the page in a browser
        # the monitoring gauges are the admin's, like /monitor (Prometheus scrapes with a key)
        assert "mlcycle_monitor_" not in httpx.get(f"{server.url}/metrics").text
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}
        ).text
        assert 'mlcycle_monitor_feature_drift{feature="ApplicantIncome"} 2.0' in metrics
        assert "mlcycle_monitor_drift_detected 1.0" in metrics
        assert 'mlcycle_monitor_group_selection_rate{column="Gender",group="Male"}' in metrics
        assert 'mlcycle_monitor_fairness_disparity{column="Married",disparity=' in metrics
        assert httpx.get(f"{server.url}/monitor").status_code == 401
        page = httpx.get(f"{server.url}/monitor", headers={"X-API-Key": ADMIN})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'data-feature="Married" data-status="drift"' in page.text
        assert "<h2>Fairness</h2>" in page.text and "<h3>Gender</h3>" in page.text
        dom = render(html.as_uri(), f"monitor-dashboard-{backend}.png")
        assert dom.count('class="chart dist"') == len(mspec.feature_columns) + 1
        # realized metrics over time: one report had matured labels (step 2), a sentence
        assert 'class="note timeline-one"' in dom and 'class="chart timeline"' not in dom
        assert '<span class="badge" id="verdict"' in dom
    finally:
        server.stop()
        store.close()


def _fairness_is_the_logs(
    found: dict, store: object, spec: DatasetSpec, truth: dict[str, str]
) -> None:
    """Each Gender group's selection rate and realized TPR, FPR and accuracy, counted
    from the logged predictions and the labels that arrived."""
    assert spec.target is not None
    positive = spec.target.positive
    rows = [
        (group if group is not None else "(missing)", label, truth[i])
        for doc in store.find(predictions_collection(spec.name))  # type: ignore[attr-defined]
        for i, label, group in zip(
            doc["ids"], doc["labels"], doc["features"]["Gender"], strict=True
        )
    ]
    assert sum(g["rows"] for g in found["groups"].values()) == len(rows)
    for group, g in found["groups"].items():
        mine = [(label, t) for name, label, t in rows if name == group]
        assert g["rows"] == g["matured"] == len(mine)
        assert g["selection_rate"] == pytest.approx(
            sum(said == positive for said, _ in mine) / len(mine)
        )
        assert g["change"] == pytest.approx(g["selection_rate"] - g["training_selection_rate"])
        assert g["accuracy"] == pytest.approx(sum(said == t for said, t in mine) / len(mine))
        pos = [label for label, t in mine if t == positive]
        neg = [label for label, t in mine if t != positive]
        if pos:
            assert g["tpr"] == pytest.approx(sum(said == positive for said in pos) / len(pos))
        if neg:
            assert g["fpr"] == pytest.approx(sum(said == positive for said in neg) / len(neg))
    rates = [g["selection_rate"] for g in found["groups"].values()]
    assert found["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))
