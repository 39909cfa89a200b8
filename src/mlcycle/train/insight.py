"""What a model card says about how a version decides, computed from the run:

- **global feature importance**: each feature's mean absolute contribution to the raw
  score over the hold-out rows, from the version's own explainer (its bundle's linear
  fold or tree tables: the numbers `?explain=true` gives);
- **one-feature rules**: for every feature, the best rule that looks at it alone (each
  category -> its most frequent label; a number -> one threshold), fitted on the
  training part and scored on the same hold-out rows as the model, so a reader sees how
  much the model adds over, say, "approve when the credit history is good".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.bundle import explainer_file
from mlcycle.explanation import explanation, load_explainer, servable
from mlcycle.spec import DatasetSpec
from mlcycle.train.export import onnx_feed

THRESHOLDS = 64
"""Candidate thresholds a numeric rule tries (the training part's quantiles)."""


def feature_importance(
    folder: Path,
    spec: DatasetSpec,
    frame: pd.DataFrame,
    class_labels: list[str],
    positive: int | None,
    fill: dict[str, float],
) -> dict[str, float]:
    """Feature -> mean |contribution| over `frame`'s rows (more than two labels: summed
    over the labels), largest first; {} when the version has no explainer."""
    path = explainer_file(folder)
    if path is None or frame.empty:
        return {}
    model = servable(load_explainer(path, fill), class_labels, positive)
    found = explanation(model, onnx_feed(frame, spec, fill))
    mean = np.abs(found.matrix).mean(axis=0).sum(axis=1)
    ranked = sorted(zip(found.names, mean, strict=True), key=lambda kv: -kv[1])
    return {name: float(v) for name, v in ranked}


def _majority(y: np.ndarray) -> Any:
    values, counts = np.unique(y, return_counts=True)
    return values[counts.argmax()]


def _categorical_rule(
    train: pd.Series, y_train: np.ndarray, test: pd.Series, default: Any
) -> tuple[np.ndarray, str]:
    keys = train.astype(object).where(train.notna(), "(missing)")
    table = pd.DataFrame({"k": keys.to_numpy(), "y": y_train}).groupby("k")["y"]
    mapping = {k: _majority(v.to_numpy()) for k, v in table}
    seen = test.astype(object).where(test.notna(), "(missing)")
    predicted = np.asarray([mapping.get(k, default) for k in seen], dtype=y_train.dtype)
    return predicted, "; ".join(f"{k} -> {v}" for k, v in sorted(mapping.items(), key=str))


def _numeric_rule(
    train: pd.Series, y_train: np.ndarray, test: pd.Series, default: Any
) -> tuple[np.ndarray, str]:
    x = train.to_numpy(dtype=np.float64)
    known = ~np.isnan(x)
    labels = np.unique(y_train)
    best = (-1.0, np.inf, default, default)
    cuts: np.ndarray = (
        np.unique(np.quantile(x[known], np.linspace(0, 1, THRESHOLDS)))
        if known.any()
        else np.empty(0)
    )
    for cut in cuts:
        below = known & (x <= cut)
        above = known & (x > cut)
        low = _majority(y_train[below]) if below.any() else default
        high = _majority(y_train[above]) if above.any() else default
        if low == high:
            continue
        right = (y_train[below] == low).sum() + (y_train[above] == high).sum()
        right += (y_train[~known] == default).sum()
        if right / len(y_train) > best[0]:
            best = (right / len(y_train), float(cut), low, high)
    _, cut, low, high = best
    if not np.isfinite(cut) or len(labels) < 2:
        return np.full(len(test), default, dtype=y_train.dtype), f"always {default}"
    t = test.to_numpy(dtype=np.float64)
    predicted = np.where(np.isnan(t), default, np.where(t <= cut, low, high))
    return predicted.astype(y_train.dtype), f"<= {cut:.6g} -> {low}; > {cut:.6g} -> {high}"


def one_feature_rules(
    spec: DatasetSpec,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_test: pd.DataFrame,
    y_test: np.ndarray,
    names: dict[int, str],
) -> list[dict[str, Any]]:
    """Every feature's best one-feature rule and its hold-out accuracy, best first
    (labels by their spec names; a missing value goes to the training majority)."""
    if x_test.empty or len(x_train) == 0:
        return []
    y_named = np.asarray([names[int(v)] for v in y_train], dtype=object)
    truth = np.asarray([names[int(v)] for v in y_test], dtype=object)
    default = _majority(y_named)
    out = []
    for feature in spec.numeric_features + spec.categorical_features:
        make = _numeric_rule if feature in spec.numeric_features else _categorical_rule
        predicted, rule = make(x_train[feature], y_named, x_test[feature], default)
        out.append(
            {
                "feature": feature,
                "rule": rule,
                "accuracy": float((predicted == truth).mean()),
            }
        )
    return sorted(out, key=lambda r: (-r["accuracy"], r["feature"]))


def metric_intervals(
    pipeline: Any, x_test: pd.DataFrame, y_test: np.ndarray, positive: int | None
) -> dict[str, list[float]]:
    """95 % intervals of the hold-out metrics the card shows: accuracy (Wilson) and, for
    two labels, ROC AUC (Hanley-McNeil)."""
    from mlcycle.monitor.stats import auc_interval, roc_auc, wilson

    if x_test.empty:
        return {}
    predicted = np.asarray(pipeline.predict(x_test))
    out = {"accuracy": [float(v) for v in wilson(int((predicted == y_test).sum()), len(y_test))]}
    if positive is not None:
        classes = list(pipeline.classes_)
        score = pipeline.predict_proba(x_test)[:, classes.index(positive)]
        truth = np.asarray(y_test) == positive
        auc = roc_auc(truth, score)
        pos = int(truth.sum())
        low, high = auc_interval(auc, pos, len(truth) - pos)
        if np.isfinite(low):
            out["roc_auc"] = [float(low), float(high)]
    return out
