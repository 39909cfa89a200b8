"""A version's explanation turned to the labels a client reads, shared by the API
(`mlcycle.serve.explain`), batch scoring and MLflow's pyfunc model: for two labels one
raw score (the positive label's), for more one a label. The numbers come from the
version's explainer: its linear fold (`mlcycle.fold.LinearScorer.explain`) or its tree
tables (`mlcycle.treeshap.TreeExplainer`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def positive_sign(model: Any) -> float:
    """A two-label fold's raw score is class 1's log-odds: +1 when class 1 is the
    positive label, -1 when class 0 is (its log-odds is the negation)."""
    return 1.0 if model.positive in (None, 1) else -1.0


@dataclass(frozen=True)
class Explanation:
    """Contributions turned to the labels a client reads: for two labels one raw score
    (the positive label's), for more one a label."""

    names: list[str]
    base: np.ndarray
    """k: the raw score each output starts from."""
    matrix: np.ndarray
    """rows x features x k."""
    labels: list[str] | None
    """The labels of the k outputs (more than two labels), None for one score."""


def explanation(model: Any, feed: dict[str, np.ndarray]) -> Explanation:
    """`model`'s explanation of `feed` (a model: its `scorer` explains, `class_labels`,
    `positive`, `version`, `meta`); ValueError saying why it has none."""
    explain = getattr(model.scorer, "explain", None)
    if explain is None:
        meta = getattr(model, "meta", None)
        note = getattr(meta, "explain_note", None)
        raise ValueError(
            (f"v{model.version}" if model.version else "this version")
            + " has no exact explanation"
            + (f" ({note})" if note and note.startswith("none") else "")
            + ": explanations need a linear model or a tree ensemble served by its graph"
        )
    base, terms = explain(feed)
    names = list(terms)
    matrix = np.stack([terms[n] for n in names], axis=1)  # n x features x k
    labels = list(model.class_labels)
    if len(labels) > 2:
        return Explanation(names, base, matrix, labels)
    if matrix.shape[2] == 1:  # class 1's log-odds, turned to the positive label's
        sign = positive_sign(model)
        return Explanation(names, sign * base, sign * matrix, None)
    column = 1 if model.positive is None else model.positive  # one probability a label
    return Explanation(names, base[column : column + 1], matrix[:, :, column : column + 1], None)


def columns(found: Explanation) -> dict[str, Any]:
    """The explanation as output columns of a scored table: `base` and
    `contribution_<feature>` (more than two labels: `base_<label>` and
    `contribution_<label>_<feature>`)."""
    if found.labels is None:
        out: dict[str, Any] = {"base": float(found.base[0])}
        for j, name in enumerate(found.names):
            out[f"contribution_{name}"] = found.matrix[:, j, 0]
        return out
    out = {}
    for k, label in enumerate(found.labels):
        out[f"base_{label}"] = float(found.base[k])
        for j, name in enumerate(found.names):
            out[f"contribution_{label}_{name}"] = found.matrix[:, j, k]
    return out


def load_explainer(path: Path, fill: dict[str, Any] | None) -> Any:
    """A bundle's explainer file (`bundle.explainer_file`): its linear fold or its tree
    tables, as the serving runtime reads them."""
    import json

    if path.suffix == ".json":
        from mlcycle.fold import LinearScorer

        return LinearScorer(json.loads(path.read_text()), fill)
    from mlcycle.treeshap import TreeExplainer, read_tables

    return TreeExplainer(read_tables(path), fill)


def servable(
    explainer: Any, class_labels: list[str], positive: int | None, meta: Any = None
) -> Any:
    """What `explanation` needs of a model, outside the server (training, MLflow's
    pyfunc): the explainer (None: none), the labels, the positive one."""
    from types import SimpleNamespace

    return SimpleNamespace(
        scorer=explainer if explainer is not None else SimpleNamespace(),
        class_labels=class_labels,
        positive=positive,
        version="",
        meta=meta,
    )
