"""A challenger in shadow: scored beside the champion on every answered request, logged
under the same request id and marked as the challenger's, never answering; it follows
its alias away (the app's real lifespan, embedded store and tracking)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlcycle import registry
from mlcycle.monitor.config import ChallengerPolicy
from mlcycle.monitor.run import run_monitor
from mlcycle.serve.app import create_app
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import predictions_collection, shadow_collection
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.config import ModelConfig, load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, LOAN_RECORD, embedded_settings, train_demo
from tests.servers import wait_for

pytestmark = pytest.mark.integration


def test_the_challenger_scores_in_shadow_and_never_answers(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    settings = embedded_settings(tmp_path, reload_interval=0)
    train_demo(spec, settings, 600)
    cfg = load_train_config(CONFIG_PATH)
    forest = cfg.model_copy(update={"model": ModelConfig(kind="random_forest", params={})})
    store = EmbeddedStore(settings.embedded_store_path)
    second = run_train(settings, spec, forest, store)
    client = registry.connect(settings)
    name = spec.registered_model
    if registry.champion(client, name).version != "1":  # type: ignore[union-attr]
        registry.rollback(client, name)
    registry.set_champion(client, name, str(second.version), None, alias=registry.CHALLENGER)

    records = [
        {**LOAN_RECORD, "Loan_ID": f"LP{i}", "ApplicantIncome": 1000 * i} for i in range(1, 9)
    ]
    with TestClient(create_app(settings)) as api:
        shadow = api.app.state.shadow
        assert shadow is not None and shadow.manager.current.version == second.version
        ids = []
        for i, record in enumerate(records):
            reply = api.post("/predict", json=record, headers={"X-Request-ID": f"req-{i}"})
            assert reply.status_code == 200
            ids.append(reply.json()["request_id"])
        shadowed = shadow_collection(spec.name, "challenger")

        def shadow_rows() -> dict[str, tuple[dict, int]]:
            """request id -> (its shadow document, the row's place in it)"""
            return {
                rid: (d, k) for d in store.find(shadowed) for k, rid in enumerate(d["request_ids"])
            }

        wait_for(lambda: len(shadow_rows()) == len(ids), 30, "the shadow's log entries")
        wait_for(
            lambda: store.count(predictions_collection(spec.name)) == len(ids),
            30,
            "the champion's log entries",
        )
        served = {d["request_id"]: d for d in store.find(predictions_collection(spec.name))}
        beside = shadow_rows()
        assert set(served) == set(beside) == set(ids)
        assert {d["model_version"] for d in served.values()} == {"1"}  # the champion answers
        assert {d["model_version"] for d, _ in beside.values()} == {second.version}
        assert {d.get("role") for d, _ in beside.values()} == {"challenger"}
        assert "role" not in next(iter(served.values()))
        # the same rows under the same request ids; the inputs are stored once, in the
        # champion's entry
        assert all(served[i]["ids"] == [beside[i][0]["ids"][beside[i][1]]] for i in ids)
        assert all("features" in d for d in served.values())
        assert not any("features" in d for d, _ in beside.values())
        assert any(
            served[i]["probabilities"][0] != d["probabilities"][k] for i, (d, k) in beside.items()
        )
        info = api.get("/model").json()
        assert info["version"] == "1" and info["shadow"]["version"] == second.version
        assert info["shadow"]["alias"] == "challenger" and info["shadow"]["scored"] == len(ids)
        metrics = api.get("/metrics").text
        assert 'mlcycle_shadow_model_info{alias="challenger"' in metrics
        assert "mlcycle_shadow_predictions_total" in metrics

        # stored, labelled applicants: the monitor pairs both logs on their matured ids
        known = store.read_snapshot(spec.name).head(40)
        for row in known[[spec.id_column, *spec.feature_columns]].to_dict("records"):
            sent = {k: (None if v != v else v) for k, v in row.items()}  # NaN -> null
            assert api.post("/predict", json=sent).status_code == 200
        total = len(ids) + len(known)
        wait_for(lambda: len(shadow_rows()) == total, 30, "the shadow's entries")
        wait_for(
            lambda: store.count(predictions_collection(spec.name)) == total,
            30,
            "the champion's entries",
        )
        calls: list[dict] = []
        policy = cfg.monitor.model_copy(update={"challenger": ChallengerPolicy(min_paired=10)})
        for retrain in (False, True):
            found = run_monitor(
                settings,
                spec,
                policy,
                store,
                retrain=retrain,
                train=lambda: None,
                challenger_policy=lambda c: calls.append(c) or {"action": "noted"},
            ).typed.challenger
            assert found is not None and found["version"] == second.version
            assert found["paired"] == len(known)  # the 8 unknown applicants have no label
            assert found["verdict"] in ("better", "worse", "undecided") and found["reason"]
        decided = found["verdict"] != "undecided"
        assert len(calls) == decided and (found.get("action") == {"action": "noted"}) is decided

        # the alias goes: the shadow goes with it, the champion keeps answering
        client.delete_registered_model_alias(name, registry.CHALLENGER)
        assert shadow.manager.refresh() is False and shadow.manager.current is None
        assert api.post("/predict", json=records[0]).status_code == 200
        wait_for(
            lambda: store.count(predictions_collection(spec.name)) == total + 1,
            30,
            "the champion's entry",
        )
        assert shadow.idle() and len(shadow_rows()) == total
        assert api.get("/model").json()["shadow"] is None
        store.close()
