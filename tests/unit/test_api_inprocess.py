"""The API in-process (FastAPI's TestClient, the app's real lifespan), beside the
real-uvicorn tests: every route and its errors, against a model trained here with the
embedded tracking store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlcycle.config import Settings, get_settings
from mlcycle.serve.app import create_app
from mlcycle.serve.security import hash_key
from mlcycle.spec import DatasetSpec
from tests.data import LOAN_RECORD, embedded_settings, train_demo

ADMIN, CLIENT = "admin-key-for-tests", "client-key-for-tests"
RECORD = LOAN_RECORD


@pytest.fixture(scope="module")
def trained(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("inprocess")
    settings = embedded_settings(root, reload_interval=0, max_body_bytes=4096, max_batch=500)
    train_demo(spec, settings, 600)
    keys = [
        {"name": "ops", "role": "admin", "sha256": hash_key(ADMIN)},
        {"name": "app", "role": "predict", "sha256": hash_key(CLIENT)},
    ]
    return settings.model_copy(update={"api_keys": json.dumps(keys)})


@pytest.fixture(scope="module")
def client(trained: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(trained)) as test_client:
        yield test_client


def _predict(client: TestClient, body: object, key: str | None = CLIENT) -> object:
    headers = {"X-API-Key": key} if key else {}
    return client.post("/predict", json=body, headers=headers)


def test_health_model_and_metrics(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["version"] == "1"
    info = client.get("/model").json()
    assert info["name"] == "loan-approval" and info["runtime"] == "onnx"
    assert info["scorer"] == "linear"  # a logistic regression: its fold, not the graph
    assert len(info["bundle_sha256"]) == 64
    assert "mlcycle_model_info{" in client.get("/metrics").text


def test_the_three_body_shapes_answer_alike(client: TestClient) -> None:
    one = _predict(client, RECORD).json()["predictions"][0]
    batch = _predict(client, {"records": [RECORD, RECORD]}).json()["predictions"]
    columns = {k: [v, v] for k, v in RECORD.items()}
    columnar = _predict(client, {"columns": columns}).json()["predictions"]
    assert one == batch[0] == batch[1]
    assert columnar == {
        "id": ["LP1", "LP1"],
        "label": [one["label"]] * 2,
        "probability": [one["probability"]] * 2,
        "probabilities": {k: [v] * 2 for k, v in one["probabilities"].items()},
    }
    assert set(one["probabilities"]) == {"Y", "N"}
    assert abs(sum(one["probabilities"].values()) - 1) < 1e-5
    assert one["probability"] == one["probabilities"]["Y"]  # binary: the positive label's


@pytest.mark.parametrize(
    ("body", "key", "status"),
    [
        (RECORD, None, 401),
        (RECORD, "wrong", 401),
        ({**RECORD, "Gender": "Robot"}, CLIENT, 422),
        ({"records": []}, CLIENT, 422),
        ({"records": [RECORD], "extra": 1}, CLIENT, 422),
        ({"columns": {"Gender": ["Male"], "Married": []}}, CLIENT, 422),
        ({"records": [RECORD] * 40}, CLIENT, 413),  # over the 4 KiB body limit set above
        ({"records": [{}] * 501}, CLIENT, 422),  # over the batch limit (the schema's maxItems)
        ([RECORD], CLIENT, 422),
    ],
)
def test_errors(client: TestClient, body: object, key: str | None, status: int) -> None:
    assert _predict(client, body, key).status_code == status


def test_json_only(client: TestClient) -> None:
    resp = client.post(
        "/predict",
        content=json.dumps(RECORD),
        headers={"X-API-Key": CLIENT, "Content-Type": "text/plain"},
    )
    assert resp.status_code == 415
    bad = client.post(
        "/predict", content=b"{", headers={"X-API-Key": CLIENT, "Content-Type": "application/json"}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "json_invalid"


def test_reload_needs_the_admin_role(client: TestClient) -> None:
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": CLIENT}).status_code == 403
    ok = client.post("/admin/reload", headers={"X-API-Key": ADMIN})
    assert ok.status_code == 200 and ok.json()["reloaded"] is False  # already current


def test_docs_and_openapi_follow_the_loaded_model(client: TestClient) -> None:
    assert "/docs-assets/swagger-ui-bundle.js" in client.get("/docs").text
    schema = client.get("/openapi.json").json()
    # the page names what it serves: the registered model, its dataset and its target
    assert schema["info"]["title"].endswith(": loan-approval")
    described = schema["info"]["description"]
    assert "`loan-approval`" in described and "dataset `loan`" in described
    assert "`Loan_Status` (`N`, `Y`)" in described
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    titles = [part.get("title") for part in body["schema"]["anyOf"]]
    assert titles == ["LoanRecord", "Batch"]
    columnar = schema["components"]["schemas"]["ColumnarBatch"]
    gender = columnar["properties"]["columns"]["properties"]["Gender"]
    assert gender["type"] == "array" and gender["maxItems"] == 500
    income = body["schema"]["anyOf"][0]["properties"]["ApplicantIncome"]
    assert "1000000000000000" in json.dumps(income) or "1e+15" in json.dumps(income)


def test_no_model_means_503(spec: DatasetSpec, tmp_path: Path) -> None:
    settings = get_settings().model_copy(
        update={"data_dir": tmp_path / "empty", "reload_interval": 0}
    )
    with TestClient(create_app(settings)) as empty:
        assert empty.get("/health/ready").status_code == 503
        assert empty.post("/predict", json=RECORD).status_code == 503
        assert not (tmp_path / "empty" / "mlflow.db").exists()


def test_every_route_can_run_and_predict_is_documented(client: TestClient) -> None:
    """No handler the middleware shadows: `/predict` is answered by the fast path only,
    and documented from the loaded model with its answer and error schemas."""
    paths = {getattr(route, "path", None) for route in client.app.routes}  # type: ignore[attr-defined]
    assert "/predict" not in paths
    assert {"/health/live", "/health/ready", "/model", "/admin/reload", "/metrics"} <= paths
    doc = client.get("/openapi.json").json()
    predict = doc["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {"200", "401", "403", "413", "415", "422", "503"}
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/PredictResponse"
    assert "probabilities" in doc["components"]["schemas"]["Prediction"]["properties"]


def test_predictions_are_counted_by_label_through_the_managers_hooks(client: TestClient) -> None:
    before = client.get("/metrics").text
    assert _predict(client, {"records": [RECORD] * 3}).status_code == 200
    after = client.get("/metrics").text

    def count(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mlcycle_predictions_total{")
        )

    assert count(after) - count(before) == 3
    assert "mlcycle_model_reloads_total 1.0" in after  # the swap hook ran once


def _large_batch(field: str, value: str) -> bytes:
    records = [dict(RECORD, Loan_ID=f"LP{i}") for i in range(300)]
    records[-1][field] = "@@"
    return json.dumps({"records": records}).replace('"@@"', value).encode()


@pytest.fixture(scope="module")
def roomy(trained: Settings) -> Iterator[TestClient]:
    """The same model with room for large batches (the typed decoder's path)."""
    settings = trained.model_copy(update={"max_body_bytes": 4 * 1024 * 1024})
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("field", list(RECORD))
def test_a_value_nested_at_any_depth_is_a_422_in_every_field(roomy: TestClient, field: str) -> None:
    for depth in (2_000, 50_000):
        body = _large_batch(field, "[" * depth + "]" * depth)
        assert len(body) > 64 * 1024 or depth > 2_000
        reply = roomy.post(
            "/predict",
            content=body,
            headers={"content-type": "application/json", "X-API-Key": CLIENT},
        )
        assert reply.status_code == 422, (field, depth, reply.text[:200])


def test_made_up_methods_do_not_grow_the_metrics(client: TestClient) -> None:
    for k in range(300):
        client.request(f"M{k:04d}X", "/predict")
        client.request(f"Z{k:04d}", "/nowhere")
    text = client.get("/metrics", headers={"X-API-Key": ADMIN}).text
    methods = set(re.findall(r'^mlcycle_http_requests_total\{.*?method="([^"]*)"', text, re.M))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods


def test_what_an_anonymous_caller_may_see(client: TestClient) -> None:
    """Anonymous (and a predict key): liveness, readiness and /model without internals
    (no load error), the docs and the request metrics. Admin: the monitoring gauges and
    the load error too."""
    assert client.get("/health/live").status_code == 200
    assert set(client.get("/health/ready").json()) == {"status", "model", "version"}
    manager = client.app.state.manager  # type: ignore[attr-defined]
    manager.last_error = "v2 refused: /secret/path/model.onnx parity 0.3"
    try:
        for headers in ({}, {"X-API-Key": CLIENT}):
            info = client.get("/model", headers=headers).json()
            assert info["version"] == "1" and info["last_error"] is None
        admin = client.get("/model", headers={"X-API-Key": ADMIN}).json()
        assert admin["last_error"] == manager.last_error
    finally:
        manager.last_error = None
    assert client.get("/metrics").status_code == 200
    app = client.app
    from prometheus_client.core import GaugeMetricFamily

    class Probe:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield GaugeMetricFamily("mlcycle_monitor_probe", "a monitoring gauge", 1.0)

    probe = Probe()
    app.state.metrics.monitoring.register(probe)  # type: ignore[attr-defined]
    try:
        assert "mlcycle_monitor_probe" not in client.get("/metrics").text
        assert (
            "mlcycle_monitor_probe"
            not in client.get("/metrics", headers={"X-API-Key": CLIENT}).text
        )
        admin = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
        assert "mlcycle_monitor_probe 1.0" in admin
    finally:
        app.state.metrics.monitoring.unregister(probe)  # type: ignore[attr-defined]


def test_an_error_a_route_raises_is_answered_with_its_status(trained: Settings) -> None:
    from mlcycle.errors import StoreUnavailable

    app = create_app(trained)

    @app.get("/raises")
    async def raises() -> None:
        raise StoreUnavailable("the store cannot be reached")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        answer = test_client.get("/raises")
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the store cannot be reached"}


def test_explain_gives_contributions_that_add_up_to_the_models_log_odds(
    client: TestClient, trained: Settings, spec: DatasetSpec
) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    from mlcycle.train.mlflow_model import load_pipeline

    records = [
        RECORD,
        {**RECORD, "Loan_ID": "LP9", "Credit_History": 0.0, "ApplicantIncome": 150.0},
        {**RECORD, "Loan_ID": "LP8", "LoanAmount": None, "Property_Area": None},
    ]
    reply = client.post(
        "/predict?explain=true", json={"records": records}, headers={"X-API-Key": CLIENT}
    )
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    mlflow.set_tracking_uri(trained.tracking_uri)
    mlflow.set_registry_uri(trained.tracking_uri)
    pipeline = load_pipeline(f"models:/{spec.registered_model}@champion")
    frame = pd.DataFrame(records)[spec.feature_columns]
    frame = frame.astype({c: "float64" for c in spec.numeric_features})
    log_odds = pipeline.decision_function(frame)  # the positive label is class 1 here
    for p, z in zip(predictions, log_odds, strict=True):
        assert set(p["contributions"]) == set(spec.feature_columns)
        assert p["base"] + sum(p["contributions"].values()) == pytest.approx(z, abs=1e-6)
        lowered = [r for r in p["reasons"] if r["contribution"] < 0]
        assert lowered == p["reasons"] and len(p["reasons"]) <= 4
        worst = sorted(p["contributions"].items(), key=lambda kv: kv[1])[: len(p["reasons"])]
        assert [r["feature"] for r in p["reasons"]] == [k for k, v in worst if v < 0]
        assert all(r["reason"] for r in p["reasons"])
    # no credit history lowers the approval score, and says so first among its reasons
    declined = predictions[1]
    assert declined["contributions"]["Credit_History"] < 0
    assert "Credit_History" in [r["feature"] for r in declined["reasons"]]
    # the columnar shape carries the same numbers; a plain request carries none
    columns = {k: [r.get(k) for r in records] for k in records[0]}
    wide = client.post(
        "/predict?explain=1", json={"columns": columns}, headers={"X-API-Key": CLIENT}
    ).json()["predictions"]
    assert np.allclose(wide["base"], [p["base"] for p in predictions])
    assert wide["contributions"] == [p["contributions"] for p in predictions]
    plain = _predict(client, RECORD).json()["predictions"][0]  # type: ignore[attr-defined]
    assert "contributions" not in plain
    bad = client.post("/predict?explain=maybe", json=RECORD, headers={"X-API-Key": CLIENT})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "explain"]
    schema = client.get("/openapi.json").json()
    assert schema["paths"]["/predict"]["post"]["parameters"][0]["name"] == "explain"


def test_the_served_version_has_its_model_card(client: TestClient) -> None:
    reply = client.get("/model/card")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/markdown")
    text = reply.text
    assert text.startswith("<!-- loan-approval v1, run ")
    for heading in (
        "# Model card: loan-approval",
        "## Intended use",
        "## Training data",
        "## Evaluation",
        "## Fairness",
        "## Decision",
        "## Limitations",
    ):
        assert heading in text, heading
    assert "**Gender** (a model input)" in text and "| Female |" in text
    assert "Promoted" in text and "| roc_auc |" in text
    page = client.get("/model/card?format=html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h2>Fairness</h2>" in page.text and "<script" not in page.text
    assert client.get("/model/card?format=pdf").status_code == 422
