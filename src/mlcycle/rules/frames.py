"""The column rules on a table: validate and clean one chunk of raw values against the
dataset spec (pure, vectorised): the ETL's path.

Each column is coerced to its spec type in one vectorised pass; every value that fails
a rule yields one issue (row, column, value, reason). A row with any issue is rejected
as a whole; the others come out typed and canonical. Missing values stay missing unless
the column's `on_missing` policy says `drop` (the row is skipped, not quarantined) or
`fill`; imputation belongs to the model pipeline, fitted on training data only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlcycle.rules.text import TEXT_TYPES, is_typed_numbers, spelled_numbers
from mlcycle.rules.values import (
    FALSE_STRINGS,
    NON_FINITE_PATTERN,
    NUMBER_LIMIT,
    NUMBER_PATTERN,
    RECORD_ERROR,
    TRUE_STRINGS,
    value_text,
)
from mlcycle.spec import ColumnSpec, DatasetSpec

ISSUE_COLUMNS = ["pos", "column", "value", "reason"]


@dataclass(frozen=True)
class ChunkResult:
    """The outcome for one chunk: typed valid rows, issues of rejected rows, drops.

    `valid` keeps the chunk's positional index (0..n-1) so callers can map rows back to
    file rows; `issues` has one line per failed value, `pos` being that position.
    """

    valid: pd.DataFrame
    issues: pd.DataFrame
    dropped: int


_NO_ISSUES = pd.DataFrame(columns=ISSUE_COLUMNS)
"""Shared by every rule that finds nothing (dropped before the issues are combined):
building an empty frame per rule and chunk cost more than some rules themselves."""


def _issues(mask: pd.Series | np.ndarray, column: str, raw: pd.Series, reason: str) -> pd.DataFrame:
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return _NO_ISSUES
    pos = np.flatnonzero(mask)
    return pd.DataFrame(
        {
            "pos": pos,
            "column": column,
            "value": raw.iloc[pos].astype(object).to_numpy(),
            "reason": reason,
        }
    )


_Text = Callable[[], pd.Series]
"""A column's raw values as issues show them, made only when an issue needs them."""

_NUMBER = f"^{NUMBER_PATTERN}$"
_NON_FINITE = f"^{NON_FINITE_PATTERN}$"


def _numeric(
    name: str, col: ColumnSpec, raw: pd.Series, present: pd.Series
) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Parse numbers with Arrow kernels (a regex gate, then a cast): ~5x pandas' speed."""
    problems: list[pd.DataFrame] = []
    arr = pa.array(raw, type=pa.string(), from_pandas=True)
    looks_numeric = pc.fill_null(pc.match_substring_regex(arr, _NUMBER), False)
    gated = pc.if_else(looks_numeric, arr, pa.scalar(None, pa.string()))
    num = pd.Series(pc.cast(gated, pa.float64()).to_numpy(zero_copy_only=False), index=raw.index)
    unparsed = present.to_numpy(bool) & ~looks_numeric.to_numpy(zero_copy_only=False)
    non_finite = np.zeros(len(raw), dtype=bool)
    if unparsed.any():
        non_finite = pc.fill_null(
            pc.match_substring_regex(arr, _NON_FINITE, ignore_case=True), False
        ).to_numpy(zero_copy_only=False)
    problems.append(_issues(unparsed & non_finite, name, raw, col.msg_not_finite()))
    problems.append(_issues(unparsed & ~non_finite, name, raw, col.msg_not_number()))
    return _number_rules(name, col, raw, present, num, problems)


def _typed_numeric(
    name: str, col: ColumnSpec, raw: pd.Series, present: pd.Series
) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Numbers read typed (float64): what `_numeric` finds in their text, without it.
    Infinities are the text "inf" (not finite); a whole -0.0 is the text "0"."""
    infinite = present & np.isinf(raw)
    problems = [_issues(infinite, name, raw, col.msg_not_finite())]
    num = raw.where(present & ~infinite, np.nan) + 0.0
    return _number_rules(name, col, raw, present, num, problems)


def _number_rules(
    name: str,
    col: ColumnSpec,
    raw: pd.Series,
    present: pd.Series,
    num: pd.Series,
    problems: list[pd.DataFrame],
) -> tuple[pd.Series, list[pd.DataFrame]]:
    """The checks on parsed numbers (missing where unparsed): finite, within the
    limit, whole for integers, the spec's range and values."""
    overflow = present & np.isinf(num)  # e.g. 1e999
    problems.append(_issues(overflow, name, raw, col.msg_not_finite()))
    huge = present & ~np.isinf(num) & (num.abs() > NUMBER_LIMIT)
    problems.append(_issues(huge, name, raw, col.msg_beyond()))
    num = num.where(~(overflow | huge), np.nan)
    ok = num.notna()
    if col.type == "integer":
        frac = ok & (num % 1 != 0)
        problems.append(_issues(frac, name, raw, col.msg_not_whole()))
        num = num.where(~frac, np.nan)
    if col.min is not None:
        problems.append(_issues(ok & (num < col.min), name, raw, col.msg_below()))
    if col.max is not None:
        problems.append(_issues(ok & (num > col.max), name, raw, col.msg_above()))
    if col.values is not None:
        outside = ok & ~num.isin([float(v) for v in col.values])
        problems.append(_issues(outside, name, raw, col.msg_not_allowed()))
    return (num.astype("Int64") if col.type == "integer" else num), problems


def _category(
    name: str, col: ColumnSpec, values: pd.Series, null_values: list[str], text: _Text
) -> tuple[pd.Series, pd.Series, list[pd.DataFrame]]:
    """Map accepted spellings to canonical values, one distinct value at a time: each is
    stripped, checked for a null spelling, case-folded (`col.fold`, Python's lower-casing;
    Arrow's differs for letters such as `İ`) and looked up once, and the rows take its
    outcome. -> typed values, where a value is present, issues."""
    canon = [value_text(v) for v in col.values or []]
    targets = {k: canon.index(c) for k, c in col.spellings.items() if c in canon}
    encoded = pc.dictionary_encode(pa.array(values.astype("string"), type=pa.string()))
    words = encoded.dictionary.to_pandas(types_mapper=TEXT_TYPES.get).str.strip()
    word_present = (words.notna() & ~words.isin(null_values)).fillna(False).to_numpy(bool)
    fold = col.fold if col.case_insensitive else str
    word_codes = [
        targets.get(fold(w), -1) if ok else -1 for w, ok in zip(words, word_present, strict=True)
    ]
    rows = pc.fill_null(encoded.indices, len(words)).to_numpy(zero_copy_only=False)
    present = np.append(word_present, False)[rows]
    codes = np.append(np.asarray(word_codes, dtype=np.int64), -1)[rows]
    typed = pd.Series(pd.Categorical.from_codes(codes, categories=canon), index=values.index)
    bad = present & (codes < 0)
    problems = [_issues(bad, name, text(), col.msg_not_allowed())] if bad.any() else []
    return typed, pd.Series(present, index=values.index), problems


def _coerce(
    name: str, col: ColumnSpec, raw: pd.Series, present: pd.Series
) -> tuple[pd.Series, list[pd.DataFrame]]:
    """Coerce one column; return typed values (missing where absent or bad) and issues."""
    if col.type in ("float", "integer"):
        return _numeric(name, col, raw, present)
    problems: list[pd.DataFrame] = []
    if col.type == "boolean":
        low = raw.str.lower()
        typed = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        typed[low.isin(TRUE_STRINGS).fillna(False).to_numpy(bool)] = True
        typed[low.isin(FALSE_STRINGS).fillna(False).to_numpy(bool)] = False
        bad = present & typed.isna()
        problems.append(_issues(bad, name, raw, col.msg_not_boolean()))
        return typed, problems
    typed = raw.astype(object).where(present, None)
    if col.pattern is not None:
        matches = raw.str.fullmatch(col.pattern).fillna(False).astype(bool)
        problems.append(_issues(present & ~matches, name, raw, col.msg_pattern()))
    if col.values is not None:
        outside = present & ~raw.isin([str(v) for v in col.values]).fillna(False).astype(bool)
        problems.append(_issues(outside, name, raw, col.msg_not_allowed()))
    return typed, problems


def _column(
    name: str, col: ColumnSpec, frame: pd.DataFrame, null_values: list[str]
) -> tuple[pd.Series, pd.Series, list[pd.DataFrame], _Text]:
    """One spec column of a chunk -> typed values (missing where absent or bad), where
    a value is present, issues, and the raw values as issues show them (made on demand:
    a column read typed, or a category column, has no stripped text of its own)."""
    if name in frame.columns:
        values = frame[name]
    else:  # optional column (e.g. the target of an unlabelled file)
        values = pd.Series(pd.NA, index=frame.index, dtype="string")
    if is_typed_numbers(values):
        numbers, present = _typed_present(values, null_values)
        typed, problems = _typed_numeric(name, col, numbers, present)
        return typed, present, problems, lambda: numbers
    if col.type == "category":

        def text() -> pd.Series:
            return _text_present(values, null_values)[0]

        return (*_category(name, col, values, null_values, text), text)
    raw_col, present = _text_present(values, null_values)
    typed, problems = _coerce(name, col, raw_col, present)
    return typed, present, problems, lambda: raw_col


def _text_present(values: pd.Series, null_values: list[str]) -> tuple[pd.Series, pd.Series]:
    """A text column stripped, missing where it holds a null spelling; and where a value
    is present."""
    raw_col = values.astype("string").str.strip()
    present = (raw_col.notna() & ~raw_col.isin(null_values)).fillna(False).astype(bool)
    return raw_col.where(present, pd.NA), present


def _typed_present(values: pd.Series, null_values: list[str]) -> tuple[pd.Series, pd.Series]:
    """`_text_present` for numbers read typed: missing where NaN, or where their text is
    a null spelling (a spec may list one such as -999)."""
    present = values.notna()
    spelled_nulls = []
    for text in null_values:
        try:
            spelled_nulls.append(float(text))
        except ValueError:
            continue
    candidates = present & values.isin(spelled_nulls)
    if candidates.any():
        spelled = spelled_numbers(values[candidates])
        present[spelled[spelled.isin(null_values)].index] = False
    return values.where(present, np.nan), present


def _spelled(problems: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Issues of a column read typed carry its values as text, as from any file."""
    column = problems["column"].iat[0]
    if column not in frame.columns or not is_typed_numbers(frame[column]):
        return problems
    values = pd.Series(problems["value"].to_numpy(dtype=np.float64))
    return problems.assign(value=spelled_numbers(values).astype(object).to_numpy())


def validate_chunk(raw: pd.DataFrame, spec: DatasetSpec) -> ChunkResult:
    """Validate a chunk of raw string values; never mutates `raw`."""
    n = len(raw)
    index = pd.RangeIndex(n)
    frame = raw.reset_index(drop=True)
    null_values = list(spec.null_values)
    typed_cols: dict[str, pd.Series] = {}
    problems: list[pd.DataFrame] = []
    drop_mask = np.zeros(n, dtype=bool)

    if RECORD_ERROR in frame.columns:
        rec_err = frame[RECORD_ERROR]
        has_err = rec_err.notna().to_numpy(bool)
        if has_err.any():
            problems.append(
                pd.DataFrame(
                    {
                        "pos": np.flatnonzero(has_err),
                        "column": "<record>",
                        "value": None,
                        "reason": rec_err[has_err].astype(str).to_numpy(),
                    }
                )
            )

    for name, col in spec.columns.items():
        typed, present, col_problems, text = _column(name, col, frame, null_values)
        problems.extend(col_problems)
        missing = (~present).to_numpy(bool)
        if col.on_missing == "fill" and missing.any():
            typed = typed.copy()
            typed[missing] = col.fill_value
        elif col.on_missing == "drop":
            drop_mask |= missing
        elif not col.nullable and missing.any():
            problems.append(_issues(missing, name, text(), col.msg_missing()))
        typed_cols[name] = typed

    issues = [_spelled(p, frame) for p in problems if len(p)]
    issue_frame = (
        pd.concat(issues, ignore_index=True).sort_values(["pos"], kind="stable")
        if issues
        else pd.DataFrame(columns=ISSUE_COLUMNS)
    )
    rejected = np.zeros(n, dtype=bool)
    rejected[issue_frame["pos"].to_numpy(dtype=np.int64)] = True
    dropped = drop_mask & ~rejected
    keep = ~(rejected | dropped)
    valid = pd.DataFrame(typed_cols, index=index)[keep]
    return ChunkResult(
        valid=valid, issues=issue_frame.reset_index(drop=True), dropped=int(dropped.sum())
    )
