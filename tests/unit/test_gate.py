from __future__ import annotations

import pytest

from mlcycle.gate import should_promote
from mlcycle.train.config import GateConfig

GATE = GateConfig(metric="roc_auc", tolerance=0.01, min_lift=0.0)
BASE = {"roc_auc": 0.5}


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"),
    [
        ({"roc_auc": 0.76}, None, True, "no champion yet"),
        ({"roc_auc": 0.50}, None, False, "does not beat the majority-class baseline"),
        ({"roc_auc": 0.49}, {"roc_auc": 0.40}, False, "does not beat the majority-class baseline"),
        ({"roc_auc": 0.76}, {"roc_auc": 0.76}, True, "within 0.01"),
        ({"roc_auc": 0.755}, {"roc_auc": 0.76}, True, "within 0.01"),
        ({"roc_auc": 0.74}, {"roc_auc": 0.76}, False, "worse than the champion's 0.7600"),
        ({"roc_auc": 0.80}, {"roc_auc": 0.76}, True, "beats the baseline"),
        ({}, None, False, "candidate has no roc_auc"),
        ({"roc_auc": 0.8}, {"accuracy": 0.9}, True, "no champion yet"),
    ],
)
def test_gate_decisions(candidate, champion, promote, reason) -> None:
    decision = should_promote(candidate, BASE, champion, GATE)
    assert decision.promote is promote
    assert reason in decision.reason


def test_min_lift_requires_a_margin_over_the_baseline() -> None:
    gate = GateConfig(metric="accuracy", tolerance=0.0, min_lift=0.05)
    assert not should_promote({"accuracy": 0.72}, {"accuracy": 0.69}, None, gate).promote
    assert should_promote({"accuracy": 0.75}, {"accuracy": 0.69}, None, gate).promote


def test_a_model_the_runtime_cannot_serve_or_of_another_contract_is_refused() -> None:
    good = {"roc_auc": 0.9}
    runtime = should_promote(good, BASE, None, GATE, runtime_problem="no ONNX graph")
    assert not runtime.promote and "serving runtime cannot serve" in runtime.reason
    contract = should_promote(good, BASE, {"roc_auc": 0.5}, GATE, contract_change="spec a vs b")
    assert not contract.promote and "contract differs" in contract.reason
    weak = should_promote({"roc_auc": 0.4}, BASE, None, GATE, runtime_problem="x")
    assert "baseline" in weak.reason  # the most basic failure is named first
