"""Files to an HTTP prediction through the real commands: `mlcycle etl`, `train`, `serve`,
with FerretDB as the store and a real `mlflow server` for tracking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import UvicornServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _environ(env: dict[str, str]) -> dict[str, str]:
    """The test process's environment without its spec/config pointers: the commands run
    in a project folder made by `mlcycle init`, as a user's would."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("MLCYCLE_SPEC", "MLCYCLE_TRAIN_CONFIG")
    }
    return {**base, **env}


def _cli(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", *args, "--json"],
        env=_environ(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_synthetic_files_to_a_served_prediction(
    ferretdb: Any, mlflow_server: Any, tmp_path: Path
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    project.mkdir()
    env = {
        "MONGO_URI": ferretdb.uri,
        "MLCYCLE_MONGO_DB": f"e2e{uuid.uuid4().hex[:8]}",
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "MLCYCLE_DATA_DIR": str(project / "data"),
    }

    def run(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "mlcycle.cli", *args],
            env=_environ(env),
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    assert "created datasets/loan.yaml" in run("init")
    spec_file = project / "datasets" / "loan.yaml"
    spec_file.write_text(
        spec_file.read_text().replace("model_name: loan-approval", f"model_name: {name}")
    )
    assert "1500" in run("demo-data", "--rows", "1500", "--seed", "3")

    etl = _cli(env, project, "etl")
    assert (etl["rows_read"], etl["rejected"], etl["inserted"], etl["store"]) == (
        1500,
        0,
        1500,
        "mongodb",
    )
    again = _cli(env, project, "etl")
    assert (again["inserted"], again["updated"]) == (0, 0)

    profile = _cli(env, project, "preprocess")
    assert profile["rows"] == 1500

    trained = _cli(env, project, "train")
    assert trained["champion_after"] == "1"
    assert trained["metrics"]["roc_auc"] > trained["baseline"]["roc_auc"]

    server = UvicornServer(
        {
            **env,
            "MLCYCLE_SPEC": str(spec_file),
            "MLCYCLE_TRAIN_CONFIG": str(project / "configs" / "train.yaml"),
            "MLCYCLE_RELOAD_INTERVAL": "0",
        },
        tmp_path / "srv",
        cwd=project,
    ).start()
    try:
        record = {
            "Gender": "Female",
            "Married": "No",
            "Dependents": "1",
            "Education": "Graduate",
            "Self_Employed": "No",
            "ApplicantIncome": 4200,
            "CoapplicantIncome": 0,
            "LoanAmount": 110,
            "Loan_Amount_Term": 360,
            "Credit_History": 1,
            "Property_Area": "Rural",
        }
        resp = httpx.post(server.url + "/predict", json=record, timeout=10)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model"] == {"name": name, "version": "1"}
        assert body["predictions"][0]["label"] in ("Y", "N")
    finally:
        server.stop()
