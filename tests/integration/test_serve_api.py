"""The inference API as a real uvicorn process, serving a model trained and registered
on a real `mlflow server`."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from mlcycle import registry
from mlcycle.config import get_settings
from mlcycle.etl.pipeline import run_etl
from mlcycle.serve.security import hash_key
from mlcycle.spec import DatasetSpec
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.config import load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, renamed, write_spec
from tests.servers import BLOCKER, UvicornServer

pytestmark = pytest.mark.integration

PREDICT_KEY, ADMIN_KEY = "predict-" + uuid.uuid4().hex, "admin-" + uuid.uuid4().hex


class Deployment:
    """One registered model, its training data and the environment a server needs."""

    def __init__(self, root: Path, tracking: str, spec: DatasetSpec, spec_path: Path) -> None:
        self.root, self.tracking, self.spec, self.spec_path = root, tracking, spec, spec_path
        self.name = spec.registered_model

    def env(self, **extra: str) -> dict[str, str]:
        keys = [
            {"name": "client", "role": "predict", "sha256": hash_key(PREDICT_KEY)},
            {"name": "ops", "role": "admin", "sha256": hash_key(ADMIN_KEY)},
        ]
        base = {
            "MLFLOW_TRACKING_URI": self.tracking,
            "MLCYCLE_DATA_DIR": str(self.root / "data"),
            "MLCYCLE_TRAIN_CONFIG": str(CONFIG_PATH),
            "MLCYCLE_SPEC": str(self.spec_path),
            "MLCYCLE_API_KEYS": json.dumps(keys),
            "MLCYCLE_RELOAD_INTERVAL": "1",
            "MLCYCLE_MAX_BATCH": "2000",
            "MLCYCLE_MAX_BODY_BYTES": str(2 * 1024 * 1024),
            "MLCYCLE_ACCESS_LOG": "false",
        }
        return {**base, **extra}


@pytest.fixture(scope="module")
def deployment(
    mlflow_server: Any, spec: DatasetSpec, loan_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Deployment:
    root = tmp_path_factory.mktemp("deploy")
    own = renamed(spec, f"serve-{uuid.uuid4().hex[:8]}")
    cfg = load_train_config(CONFIG_PATH)
    store = EmbeddedStore(root / "train-store.sqlite3")
    run_etl(spec, loan_dir / "train.csv", store)
    settings = get_settings().model_copy(
        update={"mlflow_tracking_uri": mlflow_server.uri, "data_dir": root / "train-data"}
    )
    assert run_train(settings, own, cfg, store).champion_after == "1"
    store.close()
    return Deployment(root, mlflow_server.uri, own, write_spec(own, root / "spec.yaml"))


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Iterator[UvicornServer]:
    srv = UvicornServer(deployment.env(), deployment.root / "srv").start()
    yield srv
    srv.stop()


def _rows(loan_dir: Path, name: str) -> list[dict[str, Any]]:
    frame = pd.read_csv(loan_dir / name, dtype=str, keep_default_na=False)
    rows = []
    for rec in frame.to_dict("records"):
        row: dict[str, Any] = {}
        for k, v in rec.items():
            if k == "Loan_Status":
                continue
            if v == "":
                row[k] = None
            elif k in (
                "ApplicantIncome",
                "CoapplicantIncome",
                "LoanAmount",
                "Loan_Amount_Term",
                "Credit_History",
            ):
                row[k] = float(v)
            else:
                row[k] = v
        rows.append(row)
    return rows


def _post(
    server: UvicornServer, body: Any, key: str | None = PREDICT_KEY, **kw: Any
) -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    headers.update(kw.pop("headers", {}))
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/predict", content=content, headers=headers, timeout=30, **kw)


def test_one_raw_loan_row_gets_label_probability_and_version(
    server: UvicornServer, loan_dir: Path
) -> None:
    row = _rows(loan_dir, "test.csv")[0]
    resp = httpx.post(
        server.url + "/predict",
        json=row,
        headers={"X-API-Key": PREDICT_KEY, "X-Request-ID": "abc-123"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["request_id"] == "abc-123"
    assert body["model"]["version"] == "1"
    (pred,) = body["predictions"]
    assert pred["id"] == row["Loan_ID"]
    assert pred["label"] in ("Y", "N")
    assert 0.0 <= pred["probability"] <= 1.0
    assert pred["label"] == ("Y" if pred["probability"] > 0.5 else "N")


def test_the_api_agrees_with_mlflow_pyfunc_on_every_real_row(
    server: UvicornServer, deployment: Deployment, loan_dir: Path, spec: DatasetSpec
) -> None:
    rows = _rows(loan_dir, "train.csv") + _rows(loan_dir, "test.csv")
    resp = _post(server, {"records": rows})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert [p["id"] for p in preds] == [r["Loan_ID"] for r in rows]

    mlflow.set_tracking_uri(deployment.tracking)
    # MLflow's own client on the raw files as pandas reads them: same labels, and the
    # probabilities of every class to 1e-6 (the API rounds to 6 decimals)
    frame = pd.concat([pd.read_csv(loan_dir / "train.csv"), pd.read_csv(loan_dir / "test.csv")])
    pyfunc = mlflow.pyfunc.load_model(f"models:/{deployment.name}/1")
    out = pyfunc.predict(frame.drop(columns=[spec.target_column]))
    assert [p["label"] for p in preds] == out["label"].tolist()
    for label in ("Y", "N"):
        api = np.array([p["probabilities"][label] for p in preds])
        assert np.max(np.abs(api - out[f"probability_{label}"].to_numpy())) <= 1e-6


BASE = {
    "Gender": "Male",
    "Married": "Yes",
    "Dependents": "0",
    "Education": "Graduate",
    "Self_Employed": "No",
    "ApplicantIncome": 4000.0,
    "CoapplicantIncome": 0.0,
    "LoanAmount": 120.0,
    "Loan_Amount_Term": 360.0,
    "Credit_History": 1.0,
    "Property_Area": "Urban",
}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({**BASE, "Gender": "Robot"}, "Gender", "not one of the allowed values (Male, Female)"),
        ({**BASE, "ApplicantIncome": -1e9}, "ApplicantIncome", "below the minimum 0"),
        ({**BASE, "ApplicantIncome": "lots"}, "ApplicantIncome", "not a number"),
        ({**BASE, "ApplicantIncome": True}, "ApplicantIncome", "not a number"),
        ({**BASE, "ApplicantIncome": None}, "ApplicantIncome", "not nullable"),
        (
            {k: v for k, v in BASE.items() if k != "ApplicantIncome"},
            "ApplicantIncome",
            "not nullable",
        ),
        ({**BASE, "Credit_History": 0.5}, "Credit_History", "not one of the allowed values (0, 1)"),
        ({**BASE, "Gendr": "Male"}, "Gendr", "unknown field"),
        ({**BASE, "Property_Area": ["Urban"]}, "Property_Area", "not one of the allowed values"),
    ],
)
def test_bad_input_gets_422_naming_the_field(
    server: UvicornServer, body: dict, field: str, message: str
) -> None:
    resp = _post(server, body)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert any(d["loc"][-1] == field and message in d["msg"] for d in detail), detail


def test_columnar_batches_are_answered_column_wise(server: UvicornServer, loan_dir: Path) -> None:
    rows = _rows(loan_dir, "test.csv")[:50]
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    col = _post(server, {"columns": columns})
    assert col.status_code == 200, col.text
    preds = col.json()["predictions"]
    rec = _post(server, {"records": rows}).json()["predictions"]
    assert preds["id"] == [r["Loan_ID"] for r in rows]
    assert preds["label"] == [p["label"] for p in rec]
    assert preds["probability"] == [p["probability"] for p in rec]
    bad = _post(server, {"columns": {**columns, "Gender": ["Robot"] * 50}})
    assert bad.status_code == 422
    short = _post(server, {"columns": {**columns, "Gender": ["Male"]}})
    assert short.status_code == 422
    assert short.json()["detail"][0]["loc"] == ["body", "columns", "Gender"]


def test_batch_errors_name_the_record(server: UvicornServer) -> None:
    resp = _post(server, {"records": [BASE, {**BASE, "Married": "Maybe"}]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "records", 1, "Married"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b'{"records": {}}',
        b'{"records": []}',
        b'{"records": [1]}',
        b'{"records": [], "x": 1}',
        b"",
        b"NaN",
    ],
)
def test_malformed_bodies_get_4xx_never_5xx(server: UvicornServer, body: bytes) -> None:
    resp = _post(server, body)
    assert resp.status_code == 422, resp.text


def test_nullable_fields_may_be_missing_and_aliases_are_accepted(server: UvicornServer) -> None:
    minimal = {
        "ApplicantIncome": 3000,
        "Dependents": 3,
        "Property_Area": "semi-urban",
        "Married": "Y",
    }
    resp = _post(server, minimal)
    assert resp.status_code == 200, resp.text


def test_limits_give_422_for_rows_and_413_for_bytes(server: UvicornServer) -> None:
    too_many = _post(server, {"records": [BASE] * 2001})
    assert too_many.status_code == 422  # the schema's maxItems, as a validation error
    assert too_many.json()["detail"][0]["loc"] == ["body", "records"]
    huge = b'{"records": [' + b",".join([json.dumps(BASE).encode()] * 12000) + b"]}"
    assert len(huge) > 2 * 1024 * 1024
    assert _post(server, huge).status_code == 413


def test_api_keys_and_roles(server: UvicornServer) -> None:
    assert _post(server, BASE, key=None).status_code == 401
    assert _post(server, BASE, key="wrong").status_code == 401
    assert _post(server, BASE, key=ADMIN_KEY).status_code == 200
    reload_url = server.url + "/admin/reload"
    assert httpx.post(reload_url).status_code == 401
    assert httpx.post(reload_url, headers={"X-API-Key": PREDICT_KEY}).status_code == 403
    ok = httpx.post(reload_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert ok.status_code == 200
    assert ok.json()["model"]["version"] == "1"


def test_health_model_and_metrics(server: UvicornServer, deployment: Deployment) -> None:
    assert httpx.get(server.url + "/health/live").json() == {"status": "ok"}
    assert httpx.get(server.url + "/health/ready").status_code == 200
    info = httpx.get(server.url + "/model").json()
    assert info["name"] == deployment.name
    assert info["alias"] == "champion"
    assert info["runtime"] == "onnx"
    assert info["source"] == "registry"
    assert len(info["training_data_hash"]) == 64
    assert "Credit_History" in info["signature"]["numeric"]
    _post(server, BASE)
    text = httpx.get(server.url + "/metrics").text
    assert 'mlcycle_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert "mlcycle_http_request_duration_seconds_bucket" in text
    info_line = next(line for line in text.splitlines() if line.startswith("mlcycle_model_info{"))
    assert f'name="{deployment.name}"' in info_line and 'version="1"' in info_line
    assert 'runtime="onnx"' in info_line and 'source="registry"' in info_line
    assert f'run_id="{info["run_id"]}"' in info_line and info_line.endswith(" 1.0")
    assert "mlcycle_prediction_log_dropped_total" in text
    assert PREDICT_KEY not in text


def test_openapi_documents_the_record_fields(server: UvicornServer) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    schema = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    record = schema["anyOf"][0]
    assert "Gender" in record["properties"]
    assert record["additionalProperties"] is False


def test_predictions_are_logged_to_the_store(server: UvicornServer, deployment: Deployment) -> None:
    rid = "log-" + uuid.uuid4().hex[:8]
    resp = httpx.post(
        server.url + "/predict",
        json={"records": [BASE, BASE]},
        headers={"X-API-Key": PREDICT_KEY, "X-Request-ID": rid},
    )
    assert resp.status_code == 200
    store = EmbeddedStore(deployment.root / "data" / "store.sqlite3")
    deadline = time.monotonic() + 10
    docs: list[dict] = []
    while time.monotonic() < deadline and not docs:
        docs = store.find("loan_predictions", {"request_id": rid})
        time.sleep(0.2)
    store.close()
    assert len(docs) == 1  # one log document per request, with every record of it
    (doc,) = docs
    assert doc["model_version"] == "1"
    assert doc["rows"] == 2
    assert doc["features"]["Gender"] == ["Male", "Male"]  # canonical columns, any body shape
    assert doc["ids"] == [None, None]
    assert doc["labels"] == [p["label"] for p in resp.json()["predictions"]]
    assert len(doc["probabilities"]) == 2
    assert doc["latency_ms"] > 0


def test_cached_model_serves_when_tracking_is_down(
    server: UvicornServer, deployment: Deployment
) -> None:
    # `server` has run, so its data dir holds the last good model
    offline = UvicornServer(
        deployment.env(MLFLOW_TRACKING_URI="http://127.0.0.1:9"), deployment.root / "off"
    )
    offline.start()
    try:
        info = httpx.get(offline.url + "/model").json()
        assert info["source"] == "cache"
        assert info["tracking_reachable"] is False
        assert _post(offline, BASE).status_code == 200
    finally:
        offline.stop()


def test_no_model_means_not_ready(deployment: Deployment, tmp_path: Path) -> None:
    other = write_spec(renamed(deployment.spec, "does-not-exist"), tmp_path / "spec.yaml")
    srv = UvicornServer(
        deployment.env(
            MLCYCLE_SPEC=str(other),
            MLCYCLE_DATA_DIR=str(tmp_path / "d"),
            MLCYCLE_WAIT_FOR_MODEL="true",
        ),
        tmp_path,
    )
    srv.start(wait_ready=False)
    try:
        assert httpx.get(srv.url + "/health/live").status_code == 200
        assert httpx.get(srv.url + "/health/ready").status_code == 503
        assert _post(srv, BASE).status_code == 503
    finally:
        srv.stop()


def test_promoting_a_new_version_swaps_without_failing_a_request(
    server: UvicornServer, deployment: Deployment, spec: DatasetSpec, loan_dir: Path
) -> None:
    """Load runs in threads while v2 is trained, promoted and picked up by the poller."""
    results: Counter[tuple[int, str]] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                r = client.post(
                    server.url + "/predict", json=BASE, headers={"X-API-Key": PREDICT_KEY}
                )
                version = r.json()["model"]["version"] if r.status_code == 200 else "-"
                results[(r.status_code, version)] += 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        cfg = load_train_config(CONFIG_PATH)
        store = EmbeddedStore(deployment.root / "train-store.sqlite3")
        settings = get_settings().model_copy(
            update={
                "mlflow_tracking_uri": deployment.tracking,
                "data_dir": deployment.root / "train-data",
            }
        )
        result = run_train(settings, deployment.spec, cfg, store, again=True)
        store.close()
        assert result.champion_after == "2"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and results[(200, "2")] < 20:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert {status for status, _ in results} == {200}, results
    assert results[(200, "1")] > 0
    assert results[(200, "2")] >= 20
    client = registry.connect(settings)
    registry.rollback(client, deployment.name)  # leave v1 as champion for other tests


def test_schemathesis_finds_no_server_error_or_schema_violation(server: UvicornServer) -> None:
    """A real fuzzer, driven by our own OpenAPI document, with every check it has
    (schema-valid bodies accepted, schema-violating ones refused, responses as documented)."""
    st = shutil.which("st") or shutil.which("schemathesis")
    assert st is not None, "schemathesis is a dev dependency: run `make install`"
    out = subprocess.run(
        [
            st,
            "run",
            server.url + "/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "150",
            "--seed",
            "1",
            "-H",
            f"X-API-Key: {ADMIN_KEY}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert "passed" in out.stdout


def test_serving_needs_no_pandas_pyarrow_scikit_learn_or_mlflow(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The serving install (`mlcycle[serve]`) keeps the data-science stack and the MLflow
    client out: the model comes over the tracking server's REST API."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = deployment.env(PYTHONPATH=str(tmp_path), MLCYCLE_DATA_DIR=str(tmp_path / "data"))
    srv = UvicornServer(env, tmp_path / "srv").start()
    try:
        resp = _post(srv, BASE)
        assert resp.status_code == 200, resp.text
        assert httpx.get(srv.url + "/model").json()["runtime"] == "onnx"
    finally:
        srv.stop()
    assert (
        "not part of the serving install"
        not in (tmp_path / "srv" / f"uvicorn-{srv.port}.log").read_text()
    )


def test_docs_render_offline_in_a_real_browser(server: UvicornServer) -> None:
    """/docs takes Swagger UI from the installed package (no CDN: this machine has no
    internet), and headless Chromium renders the /predict operation."""
    from tests.browser import render, screenshot_path

    page = httpx.get(server.url + "/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert httpx.get(server.url + "/docs-assets/swagger-ui-bundle.js").status_code == 200
    dom = render(server.url + "/docs", "docs.png")
    assert 'class="swagger-ui' in dom
    assert "opblock-summary-path" in dom and "/predict" in dom
    assert screenshot_path("docs.png").stat().st_size > 10_000


def test_a_reused_request_id_loses_no_log_entry(
    server: UvicornServer, deployment: Deployment
) -> None:
    rid = "same-" + uuid.uuid4().hex[:8]
    for _ in range(30):
        assert _post(server, BASE, headers={"X-Request-ID": rid}).status_code == 200
    store = EmbeddedStore(deployment.root / "data" / "store.sqlite3")
    deadline = time.monotonic() + 10
    docs: list[dict] = []
    while time.monotonic() < deadline and len(docs) < 30:
        docs = store.find("loan_predictions", {"request_id": rid})
        time.sleep(0.2)
    store.close()
    assert len(docs) == 30
    assert len({d["_id"] for d in docs}) == 30


def test_json_only_and_the_target_is_not_an_input(server: UvicornServer) -> None:
    body = json.dumps(BASE).encode()
    for content_type in ("text/plain", None):
        headers = {"X-API-Key": PREDICT_KEY}
        if content_type:
            headers["Content-Type"] = content_type
        resp = httpx.post(server.url + "/predict", content=body, headers=headers, timeout=10)
        assert resp.status_code == 415, resp.text
    labelled = _post(server, {**BASE, "Loan_Status": "Y"})
    assert labelled.status_code == 422
    assert labelled.json()["detail"][0]["loc"] == ["body", "Loan_Status"]
    assert "not an input" in labelled.json()["detail"][0]["msg"]


def test_oversized_headers_and_silent_connections_are_cut_off(server: UvicornServer) -> None:
    """Limits a reverse proxy would set: 16 KB of request head, a head timeout."""
    import socket

    from mlcycle.serve.runner import HEAD_TIMEOUT_SECONDS

    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 80_000 + b"\r\n\r\n"
        )
        reply = sock.recv(1024)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    assert httpx.get(server.url + "/health/live", timeout=5).status_code == 200

    idle = socket.create_connection((host, port), timeout=HEAD_TIMEOUT_SECONDS + 10)
    idle.sendall(b"GET /health/live HTTP/1.1\r\n")  # a head that never ends
    started = time.monotonic()
    assert idle.recv(1024) == b""  # the server closed it (the socket's timeout bounds the wait)
    assert time.monotonic() - started > HEAD_TIMEOUT_SECONDS - 1  # by the head timeout
    idle.close()


def test_the_production_setting_of_one_worker_per_core_serves(
    deployment: Deployment, tmp_path: Path
) -> None:
    """`--workers 2` (MLCYCLE_SERVE_WORKERS): every worker process gets the guarded
    protocol and its own model, and answers."""
    env = deployment.env(MLCYCLE_SERVE_WORKERS="2", MLCYCLE_DATA_DIR=str(tmp_path / "data"))
    srv = UvicornServer(env, tmp_path / "srv").start()
    log_file = tmp_path / "srv" / f"uvicorn-{srv.port}.log"
    try:
        deadline = time.monotonic() + 60  # each worker loads its model before it starts
        while log_file.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.2)
        answers = {_post(srv, BASE).status_code for _ in range(20)}
        assert answers == {200}
    finally:
        srv.stop()
    log = log_file.read_text()
    assert "Can't pickle" not in log and log.count("Application startup complete") == 2
