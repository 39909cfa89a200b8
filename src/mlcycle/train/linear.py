"""A fitted linear pipeline folded into one table a feature: what serving scores with
instead of the ONNX graph when the model allows it.

A pipeline whose features are transformed column by column (a scaler a number, a one-hot
encoder a category) in front of a linear classifier computes, for a record x,

    decision(x) = base + sum over numbers j of slope_j * x_j
                       + sum over categories j of delta_j[x_j]   (delta_j[other] if unseen)

so serving needs no preprocessing at all: a multiply-add a number, a dictionary lookup a
category, then the classifier's link (logistic, softmax, or one-vs-rest). The fold is
found by probing the fitted pipeline (a base row, then one feature changed at a time),
so it does not depend on how the scaler or the encoder stores its parameters; it is kept
only if it reproduces scikit-learn's probabilities on the training sample and on mixed
probe rows to `FOLD_TOLERANCE`. Anything else (trees, interactions between columns, an
unknown link) gets no fold and is served by the graph.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.fold import LINKS, apply_link
from mlcycle.spec import DatasetSpec
from mlcycle.train.export import PARITY_ROWS, onnx_feed
from mlcycle.train.features import MISSING

logger = logging.getLogger(__name__)

FOLD_FORMAT = 1
FOLD_TOLERANCE = 1e-9
"""Largest difference from scikit-learn's probabilities a fold may have (any class, row)."""
MAX_PROBE_ROWS = 200_000
"""No fold for encoders with more categories than this in all (the table would be big)."""
UNSEEN = "\x00mlcycle-unseen\x00"
"""A category no encoder has seen: probes what an unknown value contributes."""


def _categories(pipeline: Any, spec: DatasetSpec) -> dict[str, list[str]] | None:
    """The categories the fitted encoder knows, a list a categorical feature."""
    if not spec.categorical_features:
        return {}
    try:
        cat = pipeline.named_steps["features"].named_transformers_["cat"]
        encoder = cat.steps[-1][1] if hasattr(cat, "steps") else cat
        known = encoder.categories_
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    if len(known) != len(spec.categorical_features):
        return None
    out: dict[str, list[str]] = {}
    for name, values in zip(spec.categorical_features, known, strict=True):
        if not all(isinstance(v, str) for v in values):
            return None
        out[name] = list(values)
    return out


def _decision(serving: Any, frame: pd.DataFrame) -> np.ndarray:
    with warnings.catch_warnings():  # the imputer-less copy's encoder was fitted on arrays
        warnings.simplefilter("ignore", category=UserWarning)
        d = np.asarray(serving.decision_function(frame), dtype=np.float64)
    return d.reshape(len(frame), -1)


def fold_scores(fold: dict[str, Any], feed: dict[str, np.ndarray]) -> np.ndarray:
    """The fold's decision values for model inputs as the graph takes them (numbers
    filled, categories as text): the reference the serving scorer is tested against."""
    n = len(next(iter(feed.values())))
    z = np.tile(np.asarray(fold["base"], dtype=np.float64), (n, 1))
    for name, slope in fold["numeric"].items():
        z += np.outer(feed[name].ravel().astype(np.float64), slope)
    for name, table in fold["categorical"].items():
        z += np.array([table["values"].get(v, table["other"]) for v in feed[name].ravel()])
    return z


def expected_terms(
    fold: dict[str, Any], sample: pd.DataFrame, fill: dict[str, float]
) -> dict[str, list[float]]:
    """Each feature's mean term over the sample's rows (one number a decision value):
    an explanation's contributions are the terms less these, its base the fold's base
    plus their sum, so a feature at its training average contributes 0 (as SHAP's
    linear explainer under independent features). A column at a time, each category's
    term weighted by its count: no copy of the rows as text."""
    out: dict[str, list[float]] = {}
    n = len(sample)
    for name, slope in fold["numeric"].items():
        values = sample[name].to_numpy(dtype=np.float64, na_value=np.nan)
        x = np.where(np.isnan(values), fill.get(name, np.nan), values)
        out[name] = (float(x.mean()) * np.asarray(slope, dtype=np.float64)).tolist()
    for name, table in fold["categorical"].items():
        codes, distinct = pd.factorize(sample[name], use_na_sentinel=True)
        texts = [str(v) for v in distinct] + [MISSING]  # code -1: missing
        counts = np.bincount(np.where(codes < 0, len(distinct), codes), minlength=len(texts))
        terms = np.asarray([table["values"].get(t, table["other"]) for t in texts], np.float64)
        out[name] = (counts @ terms / n).tolist()
    return out


def fold_linear(
    pipeline: Any, serving: Any, spec: DatasetSpec, sample: pd.DataFrame, fill: dict[str, float]
) -> tuple[dict[str, Any] | None, str]:
    """(the fold, why) or (None, why not). `serving` is the pipeline without imputers
    (inputs as the graph takes them), `fill` the numbers' fill values."""
    model = pipeline.named_steps.get("model")
    if not hasattr(model, "decision_function") or not hasattr(model, "coef_"):
        return None, "not a linear model"
    categories = _categories(pipeline, spec)
    if categories is None:
        return None, "no one-hot encoder to fold"
    numeric, categorical = spec.numeric_features, spec.categorical_features
    if 1 + len(numeric) + sum(len(v) + 1 for v in categories.values()) > MAX_PROBE_ROWS:
        return None, "too many categories to fold"
    base_row: dict[str, Any] = {name: 0.0 for name in numeric}
    base_row.update({name: (categories[name] or [UNSEEN])[0] for name in categorical})
    probes: list[dict[str, Any]] = [base_row]
    for name in numeric:
        probes.append({**base_row, name: 1.0})
    for name in categorical:
        probes.extend({**base_row, name: v} for v in [*categories[name], UNSEEN])
    columns = [*numeric, *categorical]
    try:
        z = _decision(serving, pd.DataFrame(probes, columns=columns))
    except Exception as err:  # a model that cannot be probed is served by the graph
        return None, f"cannot probe: {type(err).__name__}: {err}"[:200]
    base = z[0]
    fold: dict[str, Any] = {"format": FOLD_FORMAT, "base": base.tolist(), "numeric": {}}
    at = 1
    for name in numeric:
        fold["numeric"][name] = (z[at] - base).tolist()
        at += 1
    fold["categorical"] = {}
    for name in categorical:
        values = categories[name]
        deltas = z[at : at + len(values) + 1] - base
        at += len(values) + 1
        fold["categorical"][name] = {
            "values": {v: d.tolist() for v, d in zip(values, deltas[:-1], strict=True)},
            "other": deltas[-1].tolist(),
        }
    return _verified(fold, pipeline, serving, spec, sample, fill, categories)


def _mixed_rows(
    sample: pd.DataFrame, spec: DatasetSpec, categories: dict[str, list[str]], rows: int = 200
) -> pd.DataFrame:
    """Rows no one sent: each column drawn on its own from the sample, plus unseen and
    missing categories: a fold that only fits the sample's combinations shows here."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for name in spec.numeric_features:
        values = sample[name].to_numpy(dtype=np.float64, na_value=np.nan)
        out[name] = rng.choice(values, rows) if len(values) else np.zeros(rows)
        out[name] = out[name] * rng.uniform(0.5, 2.0, rows)
    for name in spec.categorical_features:
        pool = np.array([*categories[name], UNSEEN, MISSING], dtype=object)
        out[name] = rng.choice(pool, rows)
    return pd.DataFrame(out, columns=[*spec.numeric_features, *spec.categorical_features])


def _verified(
    fold: dict[str, Any],
    pipeline: Any,
    serving: Any,
    spec: DatasetSpec,
    sample: pd.DataFrame,
    fill: dict[str, float],
    categories: dict[str, list[str]],
) -> tuple[dict[str, Any] | None, str]:
    """Pick the link that reproduces predict_proba on the sample; check the decision
    values on mixed probe rows too."""
    if len(sample) == 0:
        return None, "no sample to check a fold against"
    diffs: dict[str, float] = {}
    for start in range(0, len(sample), PARITY_ROWS):  # memory: one block's probabilities
        part = sample.iloc[start : start + PARITY_ROWS]
        expected = pipeline.predict_proba(part)
        z = fold_scores(fold, onnx_feed(part, spec, fill))
        k = z.shape[1]
        for link in LINKS:
            if (link == "logistic") != (k == 1) or (k > 1 and expected.shape[1] != k):
                continue
            probs = apply_link(link, z)
            if probs.shape == expected.shape:
                diff = float(np.max(np.abs(probs - expected)))
                diffs[link] = max(diffs.get(link, 0.0), diff)
    if not diffs:
        return None, f"no link maps {k} decision value(s) to {expected.shape[1]} classes"
    link = min(diffs, key=diffs.__getitem__)
    if diffs[link] > FOLD_TOLERANCE:
        return None, f"no fold within {FOLD_TOLERANCE:g} (best {link}: {diffs[link]:.2e})"
    mixed = _mixed_rows(sample, spec, categories)
    feed = onnx_feed(mixed, spec, fill)
    graph_inputs = pd.DataFrame({k: v.ravel() for k, v in feed.items()})
    want = apply_link(link, _decision(serving, graph_inputs))
    got = apply_link(link, fold_scores(fold, feed))
    mixed_diff = float(np.max(np.abs(got - want)))
    if mixed_diff > FOLD_TOLERANCE:
        return None, f"the fold misses on mixed rows by {mixed_diff:.2e}"
    fold["link"] = link
    fold["max_abs_diff"] = max(diffs[link], mixed_diff)
    fold["expected"] = expected_terms(fold, sample, fill)
    return fold, f"linear fold, {link} link, max |p_fold - p_sklearn| = {fold['max_abs_diff']:.2e}"
