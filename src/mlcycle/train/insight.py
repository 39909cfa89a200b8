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


def _majority(counts: np.ndarray) -> int:
    """The label code with the most rows (ties: the first, codes being in name order)."""
    return int(np.argmax(counts))


def _categorical_rule(
    train: pd.Series, y: np.ndarray, test: pd.Series, default: int, k: int
) -> tuple[np.ndarray, list[tuple[Any, int]]]:
    """Each category (and missing) -> its majority label code, fitted on `train`."""
    keys = train.astype(object).where(train.notna(), "(missing)")
    codes, groups = pd.factorize(keys, sort=False)
    counts = np.zeros((len(groups), k), dtype=np.int64)
    np.add.at(counts, (codes, y), 1)
    mapping = {key: _majority(row) for key, row in zip(groups, counts, strict=True)}
    seen = test.astype(object).where(test.notna(), "(missing)")
    predicted = seen.map(mapping).fillna(default).to_numpy(dtype=np.int64)
    return predicted, list(mapping.items())


def _numeric_rule(
    train: pd.Series, y: np.ndarray, test: pd.Series, default: int, k: int
) -> tuple[np.ndarray, tuple[float, int, int] | None]:
    """The threshold (among the training part's quantiles) whose two sides' majority
    labels are right most often, a missing value counting as `default`: the label
    counts below each threshold come from one sort and cumulative counts."""
    x = train.to_numpy(dtype=np.float64)
    known = ~np.isnan(x)
    if not known.any() or np.count_nonzero(np.bincount(y, minlength=k)) < 2:
        return np.full(len(test), default, dtype=np.int64), None
    order = np.argsort(x[known], kind="stable")
    xs, ys = x[known][order], y[known][order]
    cumulative = np.zeros((len(xs) + 1, k), dtype=np.int64)
    np.cumsum(np.eye(k, dtype=np.int64)[ys], axis=0, out=cumulative[1:])
    total = cumulative[-1]
    unknown_right = int((y[~known] == default).sum())
    best = (-1.0, np.inf, default, default)
    for cut in np.unique(np.quantile(x[known], np.linspace(0, 1, THRESHOLDS))):
        i = int(np.searchsorted(xs, cut, side="right"))
        below, above = cumulative[i], total - cumulative[i]
        low = _majority(below) if i > 0 else default
        high = _majority(above) if i < len(xs) else default
        if low == high:
            continue
        right = int(below[low] + above[high]) + unknown_right
        if right / len(y) > best[0]:
            best = (right / len(y), float(cut), low, high)
    _, cut, low, high = best
    if not np.isfinite(cut):
        return np.full(len(test), default, dtype=np.int64), None
    t = test.to_numpy(dtype=np.float64)
    predicted = np.where(np.isnan(t), default, np.where(t <= cut, low, high))
    return predicted.astype(np.int64), (cut, low, high)


def one_feature_rules(
    spec: DatasetSpec,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_test: pd.DataFrame,
    y_test: np.ndarray,
    names: dict[int, str],
) -> list[dict[str, Any]]:
    """Every feature's best one-feature rule and its hold-out accuracy, best first
    (labels by their spec names; a missing value goes to the training majority). The
    labels are counted as codes in name order, so ties go to the first name."""
    if x_test.empty or len(x_train) == 0:
        return []
    labels = sorted({names[int(v)] for v in np.unique(np.concatenate([y_train, y_test]))})
    rank = {name: code for code, name in enumerate(labels)}
    to_code = np.zeros(max(names) + 1, dtype=np.int64)
    for value, name in names.items():
        to_code[value] = rank.get(name, 0)
    y, truth, k = to_code[y_train], to_code[y_test], len(labels)
    default = _majority(np.bincount(y, minlength=k))
    out = []
    for feature in spec.numeric_features + spec.categorical_features:
        if feature in spec.numeric_features:
            predicted, found = _numeric_rule(x_train[feature], y, x_test[feature], default, k)
            rule = (
                f"always {labels[default]}"
                if found is None
                else f"<= {found[0]:.6g} -> {labels[found[1]]}; > {found[0]:.6g} -> "
                f"{labels[found[2]]}"
            )
        else:
            predicted, pairs = _categorical_rule(x_train[feature], y, x_test[feature], default, k)
            named = sorted(((key, labels[code]) for key, code in pairs), key=str)
            rule = "; ".join(f"{key} -> {label}" for key, label in named)
        out.append(
            {"feature": feature, "rule": rule, "accuracy": float((predicted == truth).mean())}
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
