"""Exact SHAP values of a tree ensemble in numpy: the path-dependent algorithm of
`shap.TreeExplainer` (Lundberg et al. 2020), with nothing but numpy at serving time.

Training turns the ensemble into leaf tables (`leaf_tables`): for every leaf, its value
per output and, for each distinct feature on its path, the interval a row must fall in to
follow the path (`lo < x <= hi`) and the share of training rows that followed it there
(the product of the cover ratios of the path's splits on that feature, `zero`). A leaf
with `d` such features then adds to feature `i`

    value * (o_i - z_i) * sum_k  k! (d-k-1)! / d! * [t^k] prod_{j != i} (z_j + o_j t)

where `o_j` is 1 when the row falls in feature `j`'s interval and 0 otherwise: the
Shapley value of the leaf's path game, which is what TreeSHAP's EXTEND/UNWIND recursion
computes. Here the sum over k is an integral (W is a Beta function), evaluated
exactly by Gauss-Legendre quadrature (`_leaf_shares`), for all leaves of all trees and a
block of rows at once: a handful of numpy operations per block, however many trees.

`TreeExplainer` serves them from a bundle's `trees.npz`: the request's columns encoded as
the trees compare them (the spec pipeline's scaling and one-hot columns, in numpy), then
the values summed by feature. numpy only: the serving image carries no scikit-learn and
no shap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_CELLS = 1_000_000
"""Rows x leaves x path slots x quadrature nodes computed at once."""


def leaf_tables(trees: list[dict[str, np.ndarray]], n_outputs: int) -> dict[str, np.ndarray]:
    """Leaf tables of an ensemble, leaves ordered by how many distinct features their
    path splits on (`unique`). Each tree: `left`, `right` (child ids, -1 at a leaf),
    `feature`, `threshold` (a row goes left when `x <= threshold`), `cover` (training
    rows, or their weight, at the node) and `value` (nodes x n_outputs: what a leaf adds
    to each output)."""
    leaves: list[tuple[np.ndarray, float, list[tuple[int, float, float, float]]]] = []
    for tree in trees:
        _walk(tree, 0, [], leaves)
    leaves.sort(key=lambda leaf: len(leaf[2]))
    depth = max((len(path) for _, _, path in leaves), default=0) or 1
    n = len(leaves)
    feature = np.full((n, depth), -1, dtype=np.int64)
    lo = np.full((n, depth), -np.inf)
    hi = np.full((n, depth), np.inf)
    zero = np.ones((n, depth))
    value = np.zeros((n, n_outputs))
    expected = np.zeros(n_outputs)
    for at, (leaf_value, reach, path) in enumerate(leaves):
        value[at] = leaf_value
        expected += leaf_value * reach
        for slot, (f, low, high, share) in enumerate(path):
            feature[at, slot], lo[at, slot], hi[at, slot], zero[at, slot] = f, low, high, share
    return {
        "feature": feature,
        "lo": lo,
        "hi": hi,
        "zero": zero,
        "value": value,
        "unique": (feature >= 0).sum(axis=1),
        "expected": expected,
    }


def _walk(
    tree: dict[str, np.ndarray],
    node: int,
    path: list[tuple[int, float, float, float]],
    leaves: list[tuple[np.ndarray, float, list[tuple[int, float, float, float]]]],
) -> None:
    """Depth first; `path` holds (feature, lo, hi, share) once per distinct feature."""
    left, right = int(tree["left"][node]), int(tree["right"][node])
    if left < 0:
        reach = float(np.prod([share for *_, share in path])) if path else 1.0
        leaves.append((np.asarray(tree["value"][node], dtype=np.float64), reach, list(path)))
        return
    f, threshold, cover = int(tree["feature"][node]), float(tree["threshold"][node]), tree["cover"]
    for child, goes_left in ((left, True), (right, False)):
        share = float(cover[child]) / float(cover[node])
        step = list(path)
        found = next((k for k, p in enumerate(step) if p[0] == f), None)
        low, high, before = -np.inf, np.inf, 1.0
        if found is not None:  # the feature split above: one factor, the narrower interval
            _, low, high, before = step.pop(found)
        if goes_left:
            high = min(high, threshold)
        else:
            low = max(low, threshold)
        step.append((f, low, high, before * share))
        _walk(tree, child, step, leaves)


def _bands(unique: np.ndarray, rows: int) -> list[tuple[int, int, int]]:
    """(first leaf, end, slots) of the leaf groups computed together: all leaves at once
    (padded to the deepest) for a few rows, where numpy's per-call cost dominates; one
    group per distinct-feature count for many, where padding would be wasted work."""
    depth = int(unique.max()) if len(unique) else 0
    if rows * len(unique) * depth * ((depth + 1) // 2) <= BLOCK_CELLS:
        return [(0, len(unique), depth)] if depth else []
    found = []
    for d in np.unique(unique[unique > 0]):
        leaves = np.flatnonzero(unique == d)  # leaf_tables sorted the leaves by `unique`
        found.append((int(leaves[0]), int(leaves[-1]) + 1, int(d)))
    return found


def shap_values(
    tables: dict[str, np.ndarray], X: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """SHAP values of `X` (rows x encoded features, as the trees compare them): rows x
    features x outputs, each row's summing to its raw output less `expected`. With
    `groups` (encoded feature -> the column it adds to), the values summed by group:
    rows x (max group + 1) x outputs."""
    feature, value, unique = tables["feature"], tables["value"], tables["unique"]
    if groups is None:
        groups = np.arange(X.shape[1])
    width, outputs = (int(groups.max()) + 1 if len(groups) else 0), value.shape[1]
    out = np.zeros((len(X), width, outputs))
    for a, b, d in _bands(unique, len(X)):
        column = feature[a:b, :d]
        valid = column >= 0
        column = np.where(valid, column, 0)
        lo, hi, zero = tables["lo"][a:b, :d], tables["hi"][a:b, :d], tables["zero"][a:b, :d]
        target = groups[column]  # leaves x d
        block = max(1, BLOCK_CELLS // ((b - a) * d * ((d + 1) // 2)))
        for start in range(0, len(X), block):
            x = X[start : start + block][:, column]  # rows x leaves x d
            one = valid & (x > lo) & (x <= hi)
            phi = _leaf_shares(one, zero, valid)  # rows x leaves x d
            n = len(x)
            at = (np.arange(n)[:, None, None] * width + target[None]).ravel()
            for k in range(outputs):
                summed = np.bincount(
                    at, weights=(phi * value[a:b, k, None]).ravel(), minlength=n * width
                )
                out[start : start + n, :, k] += summed.reshape(n, width)
    return out


def _leaf_shares(one: np.ndarray, zero: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(o_i - z_i) * sum_k W[k] [t^k] prod_{j != i}(z_j + o_j t) for every row, leaf and
    path slot i, where W[k] = k! (d-k-1)! / d!. As W[k] is the Beta integral of
    s^k (1-s)^(d-1-k) over [0, 1], the sum is the integral of
    prod_{j != i}((1-s) z_j + s o_j): a polynomial of degree d-1 in s, which Gauss-Legendre
    quadrature with ceil(d/2) nodes integrates exactly. Every factor is >= 0, so nothing
    cancels (Yu et al., Linear TreeShap, 2022)."""
    d = one.shape[2]
    nodes, node_weights = np.polynomial.legendre.leggauss(max(1, (d + 1) // 2))
    s = (nodes + 1.0) / 2.0
    o = one.astype(np.float64)
    factors = (1.0 - s)[:, None, None, None] * zero + s[:, None, None, None] * o
    factors = np.where(valid, factors, 1.0)  # a padding slot is a factor of 1
    product = factors.prod(axis=3, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        others = np.where(factors > 0, product / factors, 0.0)
    integral = np.einsum("q,qrld->rld", node_weights / 2.0, others)
    return np.where(valid, (o - zero) * integral, 0.0)


class TreeExplainer:
    """`explain(feed)` for a forest or gradient boosting, as `LinearScorer.explain`."""

    def __init__(self, tables: dict[str, np.ndarray], fill: dict[str, float] | None = None):
        self.tables = tables
        self.names = [str(n) for n in tables["names"]]
        self.raw = str(tables["raw"])
        """What the contributions add up to: log_odds (of class 1), scores (each class's
        before the softmax) or probability (each class's)."""
        self._fill = fill or {}
        self._groups = tables["groups"]
        self._float32 = bool(tables["float32"])
        numeric = tables["numeric"]
        self._columns: list[tuple[int, str, bool, float, float, str]] = [
            (
                c,
                self.names[int(g)],
                bool(numeric[c]),
                float(tables["mean"][c]),
                float(tables["scale"][c]),
                str(tables["cat_values"][c]),
            )
            for c, g in enumerate(self._groups)
        ]

    def encode(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The rows as the trees see them: scaled numbers (missing ones filled with the
        training medians first), one 0/1 column per known category."""
        n = len(next(iter(feed.values())))
        X = np.zeros((n, len(self._columns)))
        for c, name, is_numeric, mean, scale, value in self._columns:
            column = feed[name].reshape(-1)
            if is_numeric:
                x = column.astype(np.float64, copy=False)
                x = np.where(np.isnan(x), self._fill.get(name, np.nan), x)
                X[:, c] = (x - mean) / scale
            else:
                X[:, c] = column == value
        return X.astype(np.float32).astype(np.float64) if self._float32 else X

    def explain(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(base, contributions): `base` per output (k), and a feature's SHAP value for
        each row and output (n x k), so `base + sum(contributions)` is the raw score."""
        phi = shap_values(self.tables, self.encode(feed), self._groups)
        phi = np.pad(phi, ((0, 0), (0, len(self.names) - phi.shape[1]), (0, 0)))
        return np.asarray(self.tables["expected"], dtype=np.float64), {
            name: phi[:, j, :] for j, name in enumerate(self.names)
        }


def read_tables(data: Any) -> dict[str, np.ndarray]:
    """The arrays of a `trees.npz` (no pickled objects)."""
    with np.load(data, allow_pickle=False) as found:
        return {k: found[k] for k in found.files}
