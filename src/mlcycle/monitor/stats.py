"""The statistics monitoring uses, on plain numpy arrays and count vectors.

PSI compares binned shares; KS (numbers) and chi-square (categories) give p-values that
are reported and used only together with PSI, never alone: on a big window every
p-value goes to zero, on a small one PSI is mostly sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EPS = 1e-4
"""Share floor for an empty bin, so PSI stays finite (the value Evidently uses too)."""

MISSING_BIN = "(missing)"
UNSEEN_BIN = "(unseen)"


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the quantiles of `values` (missing values dropped), without
    repeats: a feature with few distinct values gets fewer bins."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return np.empty(0)
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.quantile(present, qs, method="inverted_cdf"))  # observed values


def numeric_counts(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts per bin (len(edges) + 1 bins; a value equal to an edge goes up) and, last,
    the count of missing values."""
    edges_arr = np.asarray(edges, dtype=np.float64)
    missing = np.isnan(values)
    idx = np.searchsorted(edges_arr, values[~missing], side="right")
    counts = np.bincount(idx, minlength=edges_arr.size + 1).astype(np.int64)
    return np.append(counts, int(missing.sum()))


def category_counts(
    reference: Mapping[str, int], current: Mapping[Any, int]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bins for a category: the reference's categories, then the unseen ones, then missing
    (None); returns (bin names, reference counts, current counts)."""
    known = list(reference)
    ref = [int(reference[k]) for k in known]
    cur = [int(current.get(k, 0)) for k in known]
    unseen = sum(int(v) for k, v in current.items() if k is not None and k not in reference)
    ref_missing = int(reference.get(MISSING_BIN, 0))
    names = [k for k in known if k != MISSING_BIN] + [UNSEEN_BIN, MISSING_BIN]
    ref_out = [c for k, c in zip(known, ref, strict=True) if k != MISSING_BIN] + [0, ref_missing]
    cur_out = [c for k, c in zip(known, cur, strict=True) if k != MISSING_BIN] + [
        unseen,
        int(current.get(None, 0)),
    ]
    return names, np.asarray(ref_out, dtype=np.int64), np.asarray(cur_out, dtype=np.int64)


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(counts.shape)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins:
    sum((q - p) * ln(q / p)) with shares floored at EPS."""
    if reference.sum() == 0 or current.sum() == 0:
        return 0.0
    p = np.maximum(shares(reference), EPS)
    q = np.maximum(shares(current), EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_test(reference_sample: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value) on the present values."""
    from scipy.stats import ks_2samp

    ref = reference_sample[~np.isnan(reference_sample)]
    cur = current[~np.isnan(current)]
    if ref.size == 0 or cur.size == 0:
        return 0.0, 1.0
    result = ks_2samp(ref, cur, method="asymp")
    return float(result.statistic), float(result.pvalue)


def chi2_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity on a 2 x k table (bins empty on both sides dropped)."""
    from scipy.stats import chi2_contingency

    keep = (reference + current) > 0
    table = np.vstack([reference[keep], current[keep]])
    if table.shape[1] < 2 or reference.sum() == 0 or current.sum() == 0:
        return 0.0, 1.0
    stat, p, _, _ = chi2_contingency(table, correction=False)
    return float(stat), float(p)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a ROC AUC from the Hanley-McNeil standard error."""
    if n_pos == 0 or n_neg == 0 or math.isnan(auc):
        return (math.nan, math.nan)
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    half = z * math.sqrt(max(var, 0.0))
    return (max(0.0, auc - half), min(1.0, auc + half))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged); NaN when one class is absent."""
    from scipy.stats import rankdata

    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1_interval(
    y: np.ndarray, pred: np.ndarray, resamples: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap percentile interval of F1 (vectorised over resamples)."""
    n = y.size
    if n == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    yy, pp = y[idx], pred[idx]
    tp = (yy & pp).sum(axis=1)
    fp = (~yy & pp).sum(axis=1)
    fn = (yy & ~pp).sum(axis=1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    lo, hi = np.quantile(f1, [0.025, 0.975])
    return (float(lo), float(hi))


def calibration(y: np.ndarray, score: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability bins (mean score vs observed rate), expected calibration error, Brier."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    mean_score = np.bincount(idx, weights=score, minlength=bins) / np.maximum(count, 1)
    observed = np.bincount(idx, weights=y.astype(np.float64), minlength=bins) / np.maximum(count, 1)
    n = max(int(count.sum()), 1)
    ece = float(np.sum(count * np.abs(mean_score - observed)) / n)
    return {
        "ece": ece,
        "brier": float(np.mean((score - y) ** 2)) if y.size else math.nan,
        "bins": [
            {
                "from": float(edges[i]),
                "to": float(edges[i + 1]),
                "rows": int(count[i]),
                "mean_score": float(mean_score[i]),
                "observed": float(observed[i]),
            }
            for i in range(bins)
            if count[i]
        ],
    }


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    from scipy.stats import rankdata

    return np.asarray(rankdata(values, method="average"), dtype=np.float64)


def delong(y: np.ndarray, first: np.ndarray, second: np.ndarray, z: float = 1.96) -> dict[str, Any]:
    """DeLong's paired test of two ROC AUCs on the same rows (DeLong, DeLong and
    Clarke-Pearson 1988, with Sun and Xu's midrank computation): both AUCs, their
    difference `second - first`, its standard error, 95 % interval and two-sided p-value."""
    from scipy.stats import norm

    y = np.asarray(y, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos < 2 or neg < 2:
        raise ValueError("DeLong's test needs at least two rows of each class")
    v10, v01 = [], []
    for score in (np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)):
        everyone = _midranks(score)
        within_pos, within_neg = _midranks(score[y]), _midranks(score[~y])
        v10.append((everyone[y] - within_pos) / neg)  # per positive: share of negatives below
        v01.append(1.0 - (everyone[~y] - within_neg) / pos)  # per negative: share above
    aucs = [float(v.mean()) for v in v10]
    s10, s01 = np.cov(np.vstack(v10)), np.cov(np.vstack(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos + (
        s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]
    ) / neg
    diff = aucs[1] - aucs[0]
    se = math.sqrt(max(float(var), 0.0))
    p = 1.0 if se == 0 else float(2 * norm.sf(abs(diff) / se))
    if se == 0 and diff != 0:
        p = 0.0
    return {
        "first": aucs[0],
        "second": aucs[1],
        "difference": diff,
        "se": se,
        "ci": [diff - z * se, diff + z * se],
        "p_value": p,
    }


def mcnemar(first_right: np.ndarray, second_right: np.ndarray, z: float = 1.96) -> dict[str, Any]:
    """McNemar's exact test of two classifiers' accuracy on the same rows: the rows only
    one of them got right, the accuracy difference `second - first` with a 95 % interval
    (paired Wald) and the exact two-sided binomial p-value."""
    from scipy.stats import binomtest

    a, b = np.asarray(first_right, dtype=bool), np.asarray(second_right, dtype=bool)
    n = int(a.size)
    only_first, only_second = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_first + only_second
    diff = (only_second - only_first) / n if n else math.nan
    se = (
        math.sqrt(max(discordant - (only_second - only_first) ** 2 / n, 0.0)) / n if n else math.nan
    )
    p = 1.0 if discordant == 0 else float(binomtest(only_second, discordant, 0.5).pvalue)
    return {
        "first": float(a.mean()) if n else math.nan,
        "second": float(b.mean()) if n else math.nan,
        "only_first": only_first,
        "only_second": only_second,
        "difference": diff,
        "ci": [diff - z * se, diff + z * se],
        "p_value": p,
    }
