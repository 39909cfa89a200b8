"""Fairness as a measured property of every model: on the evaluation rows, per group of
each sensitive column (the spec's `sensitive`, model inputs or not), the count,
selection rate, true and false positive rates, accuracy and ROC AUC, each with a 95 %
interval, and the disparities between the groups: demographic parity difference and
ratio, equalized-odds difference. The definitions are Fairlearn's (`MetricFrame` with
`selection_rate`, `true_positive_rate`, `false_positive_rate`;
`demographic_parity_difference` / `_ratio` and `equalized_odds_difference` between
groups); a test checks the numbers against Fairlearn itself.

Two labels only: "selected" is a prediction of the positive label. A missing value is
its own group, `(missing)`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.monitor.stats import auc_interval, roc_auc, wilson

MISSING_GROUP = "(missing)"
DISPARITIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
)


def rate(hits: int, n: int) -> tuple[float | None, list[float] | None]:
    if n == 0:
        return None, None
    return hits / n, [float(x) for x in wilson(hits, n)]


def group_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """One group's metrics: `y` and `pred` booleans (positive label), `score` the
    positive label's probability."""
    n, pos = int(y.size), int(y.sum())
    tp, fp = int((y & pred).sum()), int((~y & pred).sum())
    out: dict[str, Any] = {"count": n, "positives": pos}
    for key, (hits, of) in {
        "selection_rate": (int(pred.sum()), n),
        "tpr": (tp, pos),
        "fpr": (fp, n - pos),
        "accuracy": (int((y == pred).sum()), n),
    }.items():
        out[key], out[f"{key}_ci"] = rate(hits, of)
    auc = roc_auc(y, score) if 0 < pos < n else math.nan
    out["roc_auc"] = None if math.isnan(auc) else float(auc)
    out["roc_auc_ci"] = (
        None if math.isnan(auc) else [float(x) for x in auc_interval(auc, pos, n - pos)]
    )
    return out


def disparities(groups: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Between the groups: the largest minus the smallest selection rate, the smallest
    over the largest, and the larger of the TPR and FPR ranges."""

    def spread(key: str) -> float | None:
        values = [g[key] for g in groups.values() if g[key] is not None]
        return max(values) - min(values) if values else None

    rates = [g["selection_rate"] for g in groups.values() if g["selection_rate"] is not None]
    ranges = [r for r in (spread("tpr"), spread("fpr")) if r is not None]
    return {
        "demographic_parity_difference": spread("selection_rate"),
        "demographic_parity_ratio": (min(rates) / max(rates)) if rates and max(rates) else None,
        "equalized_odds_difference": max(ranges) if ranges else None,
    }


def assess(
    sensitive: pd.DataFrame, y: np.ndarray, pred: np.ndarray, score: np.ndarray
) -> dict[str, Any]:
    """Each sensitive column (a frame aligned with `y`): its groups and disparities."""
    out: dict[str, Any] = {}
    for column in sensitive.columns:
        values = sensitive[column].astype(object)
        labels = values.where(values.notna(), MISSING_GROUP).astype(str).to_numpy()
        groups = {
            g: group_metrics(y[labels == g], pred[labels == g], score[labels == g])
            for g in sorted(set(labels))
        }
        out[column] = {"groups": groups, **disparities(groups)}
    return out


def metrics(found: dict[str, Any]) -> dict[str, float]:
    """The disparities as flat MLflow metric names (`fairness_<column>_<disparity>`)."""
    return {
        f"fairness_{column}_{key}": float(part[key])
        for column, part in found.items()
        for key in DISPARITIES
        if part.get(key) is not None
    }


def breaches(found: dict[str, Any], bounds: dict[str, float]) -> list[str]:
    """The configured bounds a model's disparities break, in words (ratios are lower
    bounds, differences upper ones)."""
    out = []
    for column, part in found.items():
        for key, bound in bounds.items():
            value = part.get(key)
            if value is None:
                continue
            low = key.endswith("_ratio")
            if (value < bound) if low else (value > bound):
                sign = "<" if low else ">"
                out.append(f"{column}: {key.replace('_', ' ')} {value:.3f} {sign} {bound:g}")
    return out


def worse_than(
    mine: dict[str, Any], theirs: dict[str, Any], tolerance: dict[str, float]
) -> list[str]:
    """The disparities where `mine` is worse than `theirs` (the champion's, on the same
    rows) by more than the configured tolerance, in words."""
    out = []
    for column, part in mine.items():
        other = theirs.get(column) or {}
        for key, allowed in tolerance.items():
            value, before = part.get(key), other.get(key)
            if value is None or before is None:
                continue
            worse = (before - value) if key.endswith("_ratio") else (value - before)
            if worse > allowed + 1e-12:
                out.append(
                    f"{column}: {key.replace('_', ' ')} {value:.3f} vs the champion's "
                    f"{before:.3f} (worse by {worse:.3f} > {allowed:g})"
                )
    return out


def selection_rates(found: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per column and group, the selection rate of `assess`'s result: what the monitor
    compares the live rates with (the version's profile keeps it as `fairness`)."""
    return {
        column: {group: m.get("selection_rate") for group, m in part.get("groups", {}).items()}
        for column, part in found.items()
    }
