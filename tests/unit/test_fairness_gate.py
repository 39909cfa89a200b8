"""The gate's fairness tolerance against the champion: both models' disparities are
measured on the same evaluation rows and recorded with every verdict; a candidate that
scores better but treats a group worse than the champion by more than the configured
tolerance is refused, saying which disparity and by how much."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlcycle.gate import GateConfig
from mlcycle.spec import DatasetSpec
from mlcycle.train.config import ModelConfig
from mlcycle.train.features import build_pipeline
from mlcycle.train.judge import Contender, judge
from mlcycle.train.snapshot import Snapshot


class Steady:
    """A champion that gives every applicant the same approval probability."""

    classes_ = np.array([0, 1])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.tile([0.3, 0.7], (len(X), 1))


class Unfair:
    """A fitted pipeline whose approvals are withheld from one group."""

    def __init__(self, pipeline: Any, column: str, group: str) -> None:
        self.pipeline, self.column, self.group = pipeline, column, group
        self.classes_ = pipeline.classes_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        proba = self.pipeline.predict_proba(X).copy()
        hit = (X[self.column] == self.group).to_numpy()
        proba[hit] = [0.99, 0.01]
        return proba


def _contenders(spec: DatasetSpec, snapshot: Snapshot) -> tuple[Contender, Contender]:
    pipeline = build_pipeline(spec, ModelConfig(), 0).fit(snapshot.X, snapshot.y)
    candidate = Contender(
        "candidate", None, Unfair(pipeline, "Gender", "Female"), 0.2, spec.contract_hash
    )
    champion = Contender("v1", "1", Steady(), 0.2, spec.contract_hash)
    return candidate, champion


def test_a_better_candidate_that_treats_a_group_worse_is_refused(
    spec: DatasetSpec, synthetic_snapshot: Snapshot
) -> None:
    candidate, champion = _contenders(spec, synthetic_snapshot)
    free = judge(synthetic_snapshot, spec, GateConfig(), candidate, champion)
    assert free.decision.promote, free.decision  # better on roc_auc, no tolerance set
    recorded = free.record()["fairness"]
    assert recorded["rows"] == free.evaluation["rows"]
    mine = recorded["candidate"]["Gender"]["demographic_parity_difference"]
    theirs = recorded["champion"]["Gender"]["demographic_parity_difference"]
    assert theirs == 0.0 and mine > 0.5
    strict = GateConfig(fairness_tolerance={"demographic_parity_difference": 0.05})
    refused = judge(synthetic_snapshot, spec, strict, candidate, champion)
    assert not refused.decision.promote
    reason = refused.decision.reason
    assert reason.startswith("fairness worse than the champion's: Gender: demographic parity")
    assert f"{mine:.3f} vs the champion's 0.000" in reason and "> 0.05" in reason
    # a tolerance wide enough lets it through; the plain model is judged by the same rule
    loose = GateConfig(fairness_tolerance={"demographic_parity_difference": 1.0})
    assert judge(synthetic_snapshot, spec, loose, candidate, champion).decision.promote
    plain = Contender("candidate", None, candidate.model.pipeline, 0.2, spec.contract_hash)
    verdict = judge(synthetic_snapshot, spec, strict, plain, champion)
    found = verdict.record()["fairness"]["candidate"]
    widest = max(part["demographic_parity_difference"] for part in found.values())
    assert verdict.decision.promote == (widest <= 0.05), (widest, verdict.decision)
