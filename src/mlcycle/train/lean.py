"""Fitting the spec pipeline on millions of rows in less memory, with the same result.

`Pipeline.fit` on a frame of training rows holds, at its peak, the rows' copy, every
branch's output (the one-hot matrix dense) and their stacked copy together: ~400 bytes a
row for the loan spec. `fit_pipeline` gives the same fitted pipeline, bit for bit, and
holds at most one branch's input and the model's matrix:

1. each branch of the `ColumnTransformer` (numbers: impute, scale; categories: impute,
   one-hot) is fitted on its own columns of the training rows, as the transformer would
   fit it;
2. the transformer's own bookkeeping (output widths, names) is made by fitting it on a
   few rows that hold every category the branches learned, and its branches are then
   swapped for the ones fitted on every row; the widths are checked to match;
3. the model's matrix is transformed in blocks of rows (each step works row by row, so
   a block gives the same numbers as the whole) and the model is fitted on it.

Anything else (a sparse encoding, a transformer of another shape, widths that differ)
takes `Pipeline.fit` as before. The tests hold it to `Pipeline.fit`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

BLOCK_ROWS = 1 << 16
"""Rows transformed at a time into the model's matrix."""


def fit_pipeline(pipeline: Any, X: pd.DataFrame, rows: np.ndarray, y: np.ndarray) -> Any:
    """`pipeline.fit(X.iloc[rows], y)`, in place, with the same fitted state."""
    pre = pipeline.named_steps["features"]
    fitted = _fit_branches(pre, X, rows, y) if _lean(pre) else None
    if fitted is None or not _assemble(pre, fitted, X, rows):
        return pipeline.fit(X.iloc[rows], y)
    matrix = transform_rows(pre, X, rows)
    pipeline.steps[-1][1].fit(matrix, y)
    return pipeline


def transform_rows(pre: Any, X: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """`pre.transform(X.iloc[rows])`, a block of rows at a time into one array."""
    out: np.ndarray | None = None
    for start in range(0, len(rows), BLOCK_ROWS):
        part = pre.transform(X.iloc[rows[start : start + BLOCK_ROWS]])
        if out is None:
            out = np.empty((len(rows), part.shape[1]), dtype=part.dtype)
        out[start : start + len(part)] = part
    return out if out is not None else pre.transform(X.iloc[rows])


def _lean(pre: Any) -> bool:
    """A column transformer of fitted-from-scratch dense branches over named columns."""
    from sklearn.compose import ColumnTransformer

    if type(pre) is not ColumnTransformer or pre.remainder != "drop":
        return False
    params = pre.get_params(deep=True)
    if any(v is True for k, v in params.items() if k.endswith("sparse_output")):
        return False
    return all(
        not isinstance(branch, str) and all(isinstance(c, str) for c in columns)
        for _, branch, columns in pre.transformers
    )


def _fit_branches(pre: Any, X: pd.DataFrame, rows: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Each branch (a clone) fitted on its columns of the rows, one branch at a time."""
    from sklearn.base import clone

    fitted: dict[str, Any] = {}
    for name, branch, columns in pre.transformers:
        if len(columns) == 0:
            continue
        where = [X.columns.get_loc(c) for c in columns]
        fitted[name] = clone(branch).fit(X.iloc[rows, where], y)
    return fitted


def _assemble(pre: Any, fitted: dict[str, Any], X: pd.DataFrame, rows: np.ndarray) -> bool:
    """Fit `pre` on a few covering rows, then put the branches fitted on every row in
    place of its own; False (and `pre` to be refitted) when their widths differ."""
    pre.fit(_covering_rows(pre, fitted, X, rows))
    own = {name: _width(branch) for name, branch, _ in pre.transformers_ if name in fitted}
    if own != {name: _width(branch) for name, branch in fitted.items()}:
        logger.debug("lean fit: branch widths differ (%s); fitting the usual way", own)
        return False
    pre.transformers_ = [(n, fitted.get(n, b), c) for n, b, c in pre.transformers_]
    return True


def _covering_rows(
    pre: Any, fitted: dict[str, Any], X: pd.DataFrame, rows: np.ndarray
) -> pd.DataFrame:
    """A few training rows in which every branch finds every category it learned;
    missing numbers set to 0 so no column is empty."""
    learned: dict[str, list[Any]] = {}
    for name, _, columns in pre.transformers:
        if name not in fitted:
            continue
        steps = getattr(fitted[name], "steps", [(name, fitted[name])])
        for _, step in steps:
            for column, values in zip(columns, getattr(step, "categories_", []), strict=False):
                learned[column] = list(values)
    size = max([1, *(len(v) for v in learned.values())])
    small = X.iloc[rows[np.arange(size) % len(rows)]].reset_index(drop=True)
    for column in small.columns:
        if column in learned:
            values = learned[column]
            small[column] = pd.Series([values[i % len(values)] for i in range(size)], dtype=object)
        elif pd.api.types.is_numeric_dtype(small[column]):
            small[column] = small[column].fillna(0.0)
    return small


def _width(branch: Any) -> int:
    return len(branch.get_feature_names_out())


def give_back_memory() -> None:
    """Return freed memory to the system: Arrow's pool and the C heap keep what a read
    freed, and a later step's peak would stack on top of it."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
