"""The model card's one-feature rules: the counting implementation gives exactly the
rules and accuracies of the definition (for each candidate threshold, or each category,
the majority label on each side, ties to the first label in name order), on numbers
with holes, categories with holes, more than two labels and tied counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlcycle.spec import parse_spec
from mlcycle.train.insight import THRESHOLDS, one_feature_rules


def _majority(y: np.ndarray) -> Any:
    values, counts = np.unique(y, return_counts=True)
    return values[counts.argmax()]


def _numeric(train: pd.Series, y: np.ndarray, test: pd.Series, default: Any) -> tuple:
    x = train.to_numpy(dtype=np.float64)
    known = ~np.isnan(x)
    best = (-1.0, np.inf, default, default)
    grid = np.linspace(0, 1, THRESHOLDS)
    cuts = np.unique(np.quantile(x[known], grid)) if known.any() else np.empty(0)
    for cut in cuts:
        below, above = known & (x <= cut), known & (x > cut)
        low = _majority(y[below]) if below.any() else default
        high = _majority(y[above]) if above.any() else default
        if low == high:
            continue
        right = (y[below] == low).sum() + (y[above] == high).sum() + (y[~known] == default).sum()
        if right / len(y) > best[0]:
            best = (right / len(y), float(cut), low, high)
    _, cut, low, high = best
    if not np.isfinite(cut) or len(np.unique(y)) < 2:
        return np.full(len(test), default, dtype=object), f"always {default}"
    t = test.to_numpy(dtype=np.float64)
    predicted = np.where(np.isnan(t), default, np.where(t <= cut, low, high))
    return predicted, f"<= {cut:.6g} -> {low}; > {cut:.6g} -> {high}"


def _categorical(train: pd.Series, y: np.ndarray, test: pd.Series, default: Any) -> tuple:
    keys = train.astype(object).where(train.notna(), "(missing)")
    table = pd.DataFrame({"k": keys.to_numpy(), "y": y}).groupby("k")["y"]
    mapping = {k: _majority(v.to_numpy()) for k, v in table}
    seen = test.astype(object).where(test.notna(), "(missing)")
    predicted = np.asarray([mapping.get(k, default) for k in seen], dtype=object)
    return predicted, "; ".join(f"{k} -> {v}" for k, v in sorted(mapping.items(), key=str))


def _definition(spec, x_train, y_train, x_test, y_test, names) -> list[dict[str, Any]]:
    y_named = np.asarray([names[int(v)] for v in y_train], dtype=object)
    truth = np.asarray([names[int(v)] for v in y_test], dtype=object)
    default = _majority(y_named)
    out = []
    for feature in spec.numeric_features + spec.categorical_features:
        make = _numeric if feature in spec.numeric_features else _categorical
        predicted, rule = make(x_train[feature], y_named, x_test[feature], default)
        out.append(
            {"feature": feature, "rule": rule, "accuracy": float((predicted == truth).mean())}
        )
    return sorted(out, key=lambda r: (-r["accuracy"], r["feature"]))


SPEC = parse_spec(
    {
        "name": "rules",
        "id_column": "id",
        "columns": {
            "id": {"type": "string", "nullable": False},
            "income": {"type": "float"},
            "steps": {"type": "integer"},
            "area": {"type": "category", "values": ["north", "south", "east", "west"]},
            "flag": {"type": "boolean"},
            "grade": {"type": "category", "values": ["a", "b", "c"]},
        },
        "features": ["income", "steps", "area", "flag"],
        "target": {"column": "grade", "labels": {"c": 0, "a": 1, "b": 2}},
    }
)


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rules_are_the_definitions(classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3_000

    def frame(rows: int) -> pd.DataFrame:
        income = rng.normal(5_000, 2_000, rows).round(-2)  # repeated values: ties at cuts
        income[rng.random(rows) < 0.1] = np.nan
        steps = rng.integers(0, 4, rows).astype(np.float64)  # few values: tied counts
        area = rng.choice(np.array(["north", "south", "east", "west", np.nan], dtype=object), rows)
        flag = rng.choice(np.array(["true", "false", np.nan], dtype=object), rows)
        return pd.DataFrame({"income": income, "steps": steps, "area": area, "flag": flag})

    x_train, x_test = frame(n), frame(n // 3)
    signal = (x_train["income"].fillna(0) > 5_000).to_numpy().astype(int)
    y_train = (signal + rng.integers(0, 2, n)) % classes
    y_test = rng.integers(0, classes, n // 3)
    names = {0: "c", 1: "a", 2: "b"}
    found = one_feature_rules(SPEC, x_train, y_train, x_test, y_test, names)
    assert found == _definition(SPEC, x_train, y_train, x_test, y_test, names)
    # a feature whose every value is missing: the training majority, always
    empty = x_train.assign(income=np.nan)
    found = one_feature_rules(SPEC, empty, y_train, x_test, y_test, names)
    assert found == _definition(SPEC, empty, y_train, x_test, y_test, names)
