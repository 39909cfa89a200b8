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
exactly by Gauss-Legendre quadrature, and a row's products over a leaf's path are one
matrix product in log space (`_constants`, `_leaf_shares`): leaves are taken in groups
of equal path length, a block of rows at once, so the cost is a few dozen numpy calls
however many trees, and a batch runs about as fast as shap's own C++ (benchmarks/batch.py).

`TreeExplainer` serves them from a bundle's `trees.npz`: the request's columns encoded as
the trees compare them (the spec pipeline's scaling and one-hot columns, in numpy), then
the values summed by feature. numpy only: the serving image carries no scikit-learn and
no shap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_CELLS = 1_000_000
"""Rows x leaves x path slots computed at once."""


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


def _bands(unique: np.ndarray) -> list[tuple[int, int, int]]:
    """(first leaf, end, slots) of the leaf groups computed together: one per number of
    distinct features on a path (no padding, and a few dozen groups at most)."""
    found = []
    for d in np.unique(unique[unique > 0]):
        leaves = np.flatnonzero(unique == d)  # leaf_tables sorted the leaves by `unique`
        found.append((int(leaves[0]), int(leaves[-1]) + 1, int(d)))
    return found


def shap_values(
    tables: dict[str, np.ndarray],
    X: np.ndarray,
    groups: np.ndarray | None = None,
    cache: dict[Any, Any] | None = None,
) -> np.ndarray:
    """SHAP values of `X` (rows x encoded features, as the trees compare them): rows x
    features x outputs, each row's summing to its raw output less `expected`. With
    `groups` (encoded feature -> the column it adds to), the values summed by group:
    rows x (max group + 1) x outputs. `cache` keeps the leaves' constants between calls
    (up to CACHE_BYTES)."""
    feature, value, unique = tables["feature"], tables["value"], tables["unique"]
    if groups is None:
        groups = np.arange(X.shape[1])
    width, outputs = (int(groups.max()) + 1 if len(groups) else 0), value.shape[1]
    out = np.zeros((len(X), width, outputs))
    for a, b, d in _bands(unique):
        column = feature[a:b, :d]
        valid = column >= 0
        column = np.where(valid, column, 0)
        lo, hi = tables["lo"][a:b, :d], tables["hi"][a:b, :d]
        consts = _constants(tables["zero"][a:b, :d], valid, (a, b, d), cache)
        target = groups[column]  # leaves x d
        block = max(1, BLOCK_CELLS // ((b - a) * d))
        for start in range(0, len(X), block):
            x = X[start : start + block][:, column]  # rows x leaves x d
            phi = _leaf_shares(valid & (x > lo) & (x <= hi), consts)  # rows x leaves x d
            n = len(x)
            at = (np.arange(n)[:, None, None] * width + target[None]).ravel()
            for k in range(outputs):
                summed = np.bincount(
                    at, weights=(phi * value[a:b, k, None]).ravel(), minlength=n * width
                )
                out[start : start + n, :, k] += summed.reshape(n, width)
    return out


CACHE_BYTES = 128 * 2**20
"""Leaf constants an explainer keeps between calls, at most."""


def _constants(
    zero: np.ndarray, valid: np.ndarray, key: Any, cache: dict[Any, Any] | None
) -> dict[str, np.ndarray]:
    """What the quadrature needs of a group of leaves, whatever the rows: with nodes s_q
    and weights g_q, a slot's factor (1-s) z + s o is (1-s) z when the row leaves the
    path there and (1-s) z (1 + s / ((1-s) z)) when it follows it, so a row's product
    is exp(log base + o . log ratio) (a matrix product), and dividing one factor out is
    a second one (`h`: g / ((1-s) z + s) per slot; `c0`: g / (1-s))."""
    if cache is not None and key in cache:
        return cache[key]
    d = zero.shape[1]
    nodes, weights = np.polynomial.legendre.leggauss(max(1, (d + 1) // 2))
    s, g = (nodes + 1.0) / 2.0, weights / 2.0
    z = np.maximum(np.where(valid, zero, 1.0), 1e-300)  # (a padding slot: a factor of 1)
    scaled = (1.0 - s)[:, None, None] * z[None]  # nodes x leaves x d
    found = {
        "z": z,
        "valid": valid,
        "base": np.where(valid[None], np.log(scaled), 0.0).sum(axis=2).T,  # leaves x nodes
        "ratio": np.where(valid[None], np.log1p(s[:, None, None] / scaled), 0.0).transpose(1, 2, 0),
        "h": g[None, :, None] / ((1.0 - s)[None, :, None] * z[:, None, :] + s[None, :, None]),
        "c0": g / (1.0 - s),
    }
    if cache is not None:
        used = sum(v.nbytes for c in cache.values() for v in c.values())
        if used + sum(v.nbytes for v in found.values()) <= CACHE_BYTES:
            cache[key] = found
    return found


def _leaf_shares(one: np.ndarray, c: dict[str, np.ndarray]) -> np.ndarray:
    """(o_i - z_i) * sum_k W[k] [t^k] prod_{j != i}(z_j + o_j t) for every row, leaf and
    path slot i, where W[k] = k! (d-k-1)! / d!. As W[k] is the Beta integral of
    s^k (1-s)^(d-1-k) over [0, 1], the sum is the integral of
    prod_{j != i}((1-s) z_j + s o_j): a polynomial of degree d-1 in s, which Gauss-Legendre
    quadrature with ceil(d/2) nodes integrates exactly (Yu et al., Linear TreeShap,
    2022). Every factor is >= 0, so nothing cancels."""
    o = one.transpose(1, 0, 2).astype(np.float64)  # leaves x rows x d
    product = np.exp(np.matmul(o, c["ratio"]) + c["base"][:, None, :])  # leaves x rows x nodes
    z = c["z"][:, None, :]
    followed = np.matmul(product, c["h"])  # the integral where o_i = 1
    left = (product @ c["c0"])[:, :, None] / z  # ... and where o_i = 0
    phi = np.where(c["valid"][:, None, :], (o - z) * np.where(o > 0, followed, left), 0.0)
    return phi.transpose(1, 0, 2)


class TreeExplainer:
    """`explain(feed)` for a forest or gradient boosting, as `LinearScorer.explain`."""

    def __init__(self, tables: dict[str, np.ndarray], fill: dict[str, float] | None = None):
        self.tables = tables
        self.names = [str(n) for n in tables["names"]]
        self.raw = str(tables["raw"])
        """What the contributions add up to: log_odds (of class 1), scores (each class's
        before the softmax) or probability (each class's)."""
        self._fill = fill or {}
        self._cache: dict[Any, Any] = {}
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
        phi = shap_values(self.tables, self.encode(feed), self._groups, self._cache)
        phi = np.pad(phi, ((0, 0), (0, len(self.names) - phi.shape[1]), (0, 0)))
        return np.asarray(self.tables["expected"], dtype=np.float64), {
            name: phi[:, j, :] for j, name in enumerate(self.names)
        }


def read_tables(data: Any) -> dict[str, np.ndarray]:
    """The arrays of a `trees.npz` (no pickled objects)."""
    with np.load(data, allow_pickle=False) as found:
        return {k: found[k] for k in found.files}
