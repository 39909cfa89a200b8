"""A folded linear model (the bundle's `linear.json`), shared by training, which finds
and checks the fold, and serving, which scores with it (`LinearScorer`): a multiply-add
a number and a dictionary lookup a category, then the classifier's link. Same inputs and
outputs as the ONNX graph of the same model (training checks the fold against
scikit-learn, the server against the bundle's reference batch), at a fraction of a graph
run's cost: one record in a few microseconds of plain Python, batches in numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LINKS = ("logistic", "softmax", "ovr")
"""Binary logistic regression; multinomial; one-vs-rest normalised (liblinear)."""


def apply_link(link: str, z: np.ndarray) -> np.ndarray:
    """Decision values (n x K') -> class probabilities (n x K), as scikit-learn's linear
    classifiers compute them (K' = 1 for two classes)."""
    with np.errstate(over="ignore"):
        if link == "logistic":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        if link == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if link == "ovr":
            p = 1.0 / (1.0 + np.exp(-z))
            return p / p.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown link {link!r}")


class _Index(dict[Any, int]):
    """Category -> row of its table; an unseen category -> the `other` row."""

    def __init__(self, values: dict[Any, int], other: int) -> None:
        super().__init__(values)
        self.other = other

    def __missing__(self, key: Any) -> int:
        return self.other


class LinearScorer:
    def __init__(self, fold: dict[str, Any], fill: dict[str, float] | None = None) -> None:
        link = fold.get("link")
        if link not in LINKS:
            raise ValueError(f"linear.json: unknown link {link!r}")
        self.link = link
        self._expected = fold.get("expected")
        fill = fill or {}
        self._base = np.asarray(fold["base"], dtype=np.float64)
        self._k = len(self._base)
        self._numeric = [
            (name, fill.get(name, math.nan), np.asarray(slope, dtype=np.float64))
            for name, slope in fold["numeric"].items()
        ]
        self._categorical = []
        for name, table in fold["categorical"].items():
            values = table["values"]
            rows = np.asarray([*values.values(), table["other"]], dtype=np.float64)
            rows = rows.reshape(len(values) + 1, self._k)
            self._categorical.append(
                (name, _Index({v: i for i, v in enumerate(values)}, len(values)), rows)
            )
        if self._k == 1 and link == "logistic":  # one record, two classes: plain floats
            self._b0 = float(self._base[0])
            self._num1 = [(name, fv, float(w[0])) for name, fv, w in self._numeric]
            self._cat1 = [
                (name, {v: float(rows[i, 0]) for v, i in index.items()}, float(rows[-1, 0]))
                for name, index, rows in self._categorical
            ]
            self._names = [name for name, _, _ in self._num1] + [n for n, _, _ in self._cat1]

    def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        first = feed[self._numeric[0][0] if self._numeric else self._categorical[0][0]]
        if len(first) == 1 and self._k == 1 and self.link == "logistic":
            return self._one(feed)
        n = len(first)
        z = np.empty((n, self._k))
        z[:] = self._base
        for name, fill, slope in self._numeric:
            x = feed[name].reshape(-1).astype(np.float64, copy=False)
            missing = np.isnan(x)
            if missing.any():
                x = np.where(missing, fill, x)
            z += x[:, None] * slope
        for name, index, rows in self._categorical:
            at = np.fromiter(map(index.__getitem__, feed[name].reshape(-1)), np.intp, n)
            z += rows[at]
        return apply_link(self.link, z)

    def explain(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(base, contributions): the base a decision value (k), and a feature's
        contribution to each row's decision values (n x k): its term less its training
        mean, so `base + sum(contributions) == decision values` (log-odds of class 1 for
        two classes, per class before the softmax otherwise). Exact: the fold is the
        model. Raises ValueError for a fold made before explanations existed."""
        if self._expected is None:
            raise ValueError("this version's fold has no training means: train it again")
        first = feed[self._numeric[0][0] if self._numeric else self._categorical[0][0]]
        n = len(first)
        base = self._base.copy()
        out: dict[str, np.ndarray] = {}
        for name, fill, slope in self._numeric:
            x = feed[name].reshape(-1).astype(np.float64, copy=False)
            x = np.where(np.isnan(x), fill, x)
            mean = np.asarray(self._expected[name], dtype=np.float64)
            out[name] = x[:, None] * slope - mean
            base += mean
        for name, index, rows in self._categorical:
            at = np.fromiter(map(index.__getitem__, feed[name].reshape(-1)), np.intp, n)
            mean = np.asarray(self._expected[name], dtype=np.float64)
            out[name] = rows[at] - mean
            base += mean
        return base, out

    def _one(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.array([self._logistic({name: feed[name].item() for name in self._names})])

    def one(self, row: dict[str, Any]) -> list[float] | None:
        """One record's inputs by name -> [P(class 0), P(class 1)] in plain floats (two
        classes, logistic link); None for other folds (then `proba`)."""
        if self._k != 1 or self.link != "logistic":
            return None
        return self._logistic(row)

    def _logistic(self, row: dict[str, Any]) -> list[float]:
        z = self._b0
        for name, fill, w in self._num1:
            x = row[name]
            z += w * (fill if x != x else x)
        for name, table, other in self._cat1:
            z += table.get(row[name], other)
        if z >= 0:
            p = 1.0 / (1.0 + math.exp(-z))
        else:
            e = math.exp(z)
            p = e / (1.0 + e)
        return [1.0 - p, p]
