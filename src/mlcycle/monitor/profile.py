"""The reference profile: what the training rows looked like, logged with every model.

Per feature: quantile bin edges and counts for numbers (plus a seeded sample of up to
`SAMPLE` values for the KS test), category counts for the rest, and the missing count;
for the model: the positive-class score on the training rows (binned the same way) and
the true and predicted label mix; and the hold-out metrics realized performance is
judged against. Plain JSON, so any later process reads it without the training stack.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlcycle.monitor.stats import MISSING_BIN, numeric_counts, quantile_edges
from mlcycle.spec import DatasetSpec

FORMAT = 1
SAMPLE = 2_000


def numeric_profile(values: np.ndarray, bins: int, rng: np.random.Generator) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    edges = quantile_edges(values, bins)
    counts = numeric_counts(values, edges)
    present = values[~np.isnan(values)]
    sample = present if present.size <= SAMPLE else rng.choice(present, SAMPLE, replace=False)
    return {
        "kind": "numeric",
        "rows": int(values.size),
        "missing": int(counts[-1]),
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts[:-1]],
        "mean": float(present.mean()) if present.size else None,
        "std": float(present.std()) if present.size else None,
        "sample": [float(v) for v in np.sort(sample)],
    }


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    missing = int(values.isna().sum())
    counts = values.dropna().astype(str).value_counts()
    out = {str(k): int(v) for k, v in counts.items()}
    if missing:
        out[MISSING_BIN] = missing
    return {"kind": "categorical", "rows": int(values.size), "missing": missing, "counts": out}


def reference_profile(
    X: pd.DataFrame,
    y: np.ndarray,
    scores: np.ndarray,
    spec: DatasetSpec,
    validation: dict[str, float],
    data_hash: str,
    bins: int = 10,
    seed: int = 0,
    predicted: np.ndarray | None = None,
) -> dict[str, Any]:
    """The profile of the training rows `X` (model-input form), their classes `y` and the
    model's positive-class scores on them."""
    assert spec.target is not None
    rng = np.random.default_rng(seed)
    features: dict[str, Any] = {}
    for name in spec.numeric_features:
        features[name] = numeric_profile(X[name].to_numpy(dtype=np.float64), bins, rng)
    for name in spec.categorical_features:
        features[name] = categorical_profile(X[name])
    names = {v: k for k, v in spec.target.labels.items()}
    positive = spec.target.positive
    if predicted is None:  # binary: the positive label above 0.5
        negative = next(k for k in spec.target.labels if k != positive)
        predicted = np.where(scores > 0.5, str(positive), negative)
    score = numeric_profile(scores, bins, rng)
    return {
        "format": FORMAT,
        "dataset": spec.name,
        "rows": len(X),
        "data_hash": data_hash,
        "features": features,
        "score": score,
        "labels": {
            str(names[int(c)]): int(n)
            for c, n in zip(*np.unique(y, return_counts=True), strict=True)
        },
        "predicted": {
            str(k): int(v) for k, v in zip(*np.unique(predicted, return_counts=True), strict=True)
        },
        "positive": positive,
        "validation": {k: float(v) for k, v in validation.items()},
        "bins": bins,
    }
