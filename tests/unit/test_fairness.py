"""Fairness numbers against Fairlearn itself, and the gate's bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcycle.train.fairness import assess, breaches, metrics


def _data(seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 900
    groups = pd.DataFrame(
        {
            "Gender": rng.choice(["Male", "Female", None], n, p=[0.7, 0.27, 0.03]),
            "Married": rng.choice(["Yes", "No"], n, p=[0.6, 0.4]),
        }
    )
    y = rng.random(n) < 0.65
    score = np.clip(
        0.45 + 0.3 * y + rng.normal(0, 0.2, n) - 0.1 * (groups["Gender"] == "Female"), 0, 1
    )
    return groups, y, score >= 0.5, score


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_numbers_are_fairlearns(seed: int) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, roc_auc_score

    groups, y, pred, score = _data(seed)
    found = assess(groups, y, pred, score)
    for column in groups.columns:
        labels = groups[column].fillna("(missing)")
        frame = MetricFrame(
            metrics={
                "selection_rate": selection_rate,
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
                "accuracy": accuracy_score,
                "count": lambda t, p: len(t),
            },
            y_true=y,
            y_pred=pred,
            sensitive_features=labels,
        )
        part = found[column]
        for group, row in frame.by_group.iterrows():
            mine = part["groups"][str(group)]
            assert mine["count"] == row["count"]
            for key in ("selection_rate", "tpr", "fpr", "accuracy"):
                assert mine[key] == pytest.approx(row[key], abs=1e-12), (column, group, key)
                low, high = mine[f"{key}_ci"]
                assert low <= mine[key] <= high
            m = (labels == group).to_numpy()
            assert mine["roc_auc"] == pytest.approx(roc_auc_score(y[m], score[m]), abs=1e-12)
        kwargs = {"sensitive_features": labels}
        assert part["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y, pred, **kwargs), abs=1e-12
        )
        assert part["demographic_parity_ratio"] == pytest.approx(
            demographic_parity_ratio(y, pred, **kwargs), abs=1e-12
        )
        assert part["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y, pred, **kwargs), abs=1e-12
        )
    flat = metrics(found)
    assert set(flat) == {
        f"fairness_{c}_{k}"
        for c in groups.columns
        for k in (
            "demographic_parity_difference",
            "demographic_parity_ratio",
            "equalized_odds_difference",
        )
    }


def test_bounds_name_what_they_break() -> None:
    groups, y, pred, score = _data(4)
    found = assess(groups, y, pred, score)
    gap = found["Gender"]["demographic_parity_difference"]
    assert breaches(found, {"demographic_parity_difference": gap + 0.01}) == [] or (
        found["Married"]["demographic_parity_difference"] > gap + 0.01
    )
    said = breaches(found, {"demographic_parity_difference": gap - 0.001})
    assert any(s.startswith("Gender: demographic parity difference") for s in said)
    ratio = found["Gender"]["demographic_parity_ratio"]
    assert any(
        "ratio" in s and "<" in s
        for s in breaches(found, {"demographic_parity_ratio": ratio + 0.01})
    )
