"""Reasons with a prediction (`POST /predict?explain=true`, `mlcycle predict --explain`):
each feature's contribution to the model's raw score, the base they add to, and the
features that lowered the positive label's score most, worded from the spec.

- A linear model's fold (the bundle's `linear.json`) is the model itself: a feature's
  contribution is its term less its training mean, and the raw score is the positive
  label's log-odds for two labels, each label's score before the softmax for more.
- A tree ensemble's bundle carries its leaf tables (`trees.npz`): contributions are exact
  SHAP values (`mlcycle.treeshap`: the numbers of shap's TreeExplainer), adding up to the
  ensemble's raw score: log-odds (gradient boosting, two labels), each label's score
  before the softmax (gradient boosting, more), each label's probability (a forest: the
  mean of its trees' class shares).

`base + sum(contributions)` is the raw score to rounding. A version without either (a
linear model served by its graph, a bundle made before explanations, an ensemble too
large for its tables) is refused with a 422 saying why, never answered with an
approximation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from mlcycle.errors import InvalidRequest
from mlcycle.explanation import explanation
from mlcycle.serve.core import Parsed, ParsedOne, Reply, Servable, parse, refusal, typed_records

REASONS = 4
"""Reasons given at most, a row (US lenders owe declined applicants up to four)."""


def _refused(msg: str) -> Reply:
    return refusal(
        InvalidRequest([{"loc": ["query", "explain"], "msg": msg, "type": "value_error"}])
    )


def _feed(body: bytes, model: Servable, max_batch: int) -> dict[str, np.ndarray] | Reply:
    parsed: Parsed | ParsedOne | Reply | None = typed_records(body, model, max_batch)
    if parsed is None:
        parsed = parse(orjson.loads(body), model, max_batch)
    if isinstance(parsed, Reply):
        return parsed
    if isinstance(parsed, ParsedOne):
        return model.validator.row_feed([parsed.row])
    return parsed.feed


def explain(body: bytes, model: Servable, max_batch: int) -> dict[str, Any] | Reply:
    """The explanation of an answered body, one entry a row: `base`, `contributions`
    (feature -> number; for more than two labels label -> feature -> number) and
    `reasons`; or the 422 that says why this version cannot be explained."""
    feed = _feed(body, model, max_batch)
    if isinstance(feed, Reply):
        return feed
    try:
        found = explanation(model, feed)
    except ValueError as err:
        return _refused(str(err))
    names, matrix, base = found.names, found.matrix, found.base
    texts = {n: c.reason or c.description or n for n, c in model.spec.columns.items()}
    if found.labels is None:
        rows = matrix[:, :, 0]
        return {
            "base": [float(base[0])] * len(rows),
            "contributions": [dict(zip(names, map(float, r), strict=True)) for r in rows],
            "reasons": [_reasons(names, r, texts) for r in rows],
        }
    top = (base[None, :] + matrix.sum(axis=1)).argmax(axis=1)
    return {
        "base": [dict(zip(found.labels, map(float, base), strict=True))] * len(matrix),
        "contributions": [
            {
                label: dict(zip(names, map(float, m[:, j]), strict=True))
                for j, label in enumerate(found.labels)
            }
            for m in matrix
        ],
        "reasons": [_reasons(names, m[:, t], texts) for m, t in zip(matrix, top, strict=True)],
    }


def _reasons(names: list[str], row: np.ndarray, texts: dict[str, str]) -> list[dict[str, Any]]:
    """The features that lowered the score most (negative contributions, lowest first)."""
    order = np.argsort(row, kind="stable")[:REASONS]
    return [
        {
            "feature": names[i],
            "reason": texts.get(names[i], names[i]),
            "contribution": float(row[i]),
        }
        for i in order
        if row[i] < 0
    ]


def attach(reply: Reply, found: dict[str, Any]) -> None:
    """The explanation into a 200's predictions, in the body's own shape."""
    predictions = reply.body["predictions"]
    if isinstance(predictions, dict):  # the columnar shape: one list a field
        predictions.update(found)
        return
    for k, prediction in enumerate(predictions):
        for key, values in found.items():
            prediction[key] = values[k]
