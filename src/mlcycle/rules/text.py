"""Raw values as text, the way the file readers give them: what a number read typed
(a Parquet number column) is spelled as, so its issues and quarantine entries read as
a CSV's would. The ETL's side only: the serving install has no pandas or Arrow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TEXT_TYPES = {pa.string(): pd.StringDtype()}
"""`types_mapper` of a raw frame made from Arrow text: pandas' string dtype, <NA> missing."""
EXACT_FLOAT = float(2**53)
"""Floats at or beyond 2^53 cannot hold every whole number: never printed as integers."""


def number_text(column: pa.Array) -> pa.Array:
    """Floats as text, the way a CSV would spell them: NaN is missing, whole floats lose
    ".0", the others take their shortest form that reads back to the same float."""
    column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    whole = pc.and_(pc.less(pc.abs(column), EXACT_FLOAT), pc.equal(pc.floor(column), column))
    as_int = pc.cast(pc.if_else(whole, column, pa.scalar(0.0, column.type)), pa.int64())
    return pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(column, pa.string()))


def spelled_numbers(values: pd.Series) -> pd.Series:
    """A column of numbers read typed (float64) as the text `number_text` gives them,
    missing as <NA>: the raw values a text column of the same file would have held."""
    text = number_text(pa.array(values.to_numpy(dtype=np.float64), type=pa.float64()))
    spelled = pa.table({"v": text}).to_pandas(types_mapper=TEXT_TYPES.get)["v"]
    return spelled.set_axis(values.index).rename(values.name)


def raw_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw rows with every column as text: numbers read typed are spelled out."""
    typed = [c for c in frame.columns if is_typed_numbers(frame[c])]
    return frame.assign(**{c: spelled_numbers(frame[c]) for c in typed}) if typed else frame


def is_typed_numbers(values: pd.Series) -> bool:
    """True for a raw column that holds numbers read typed rather than text (only a
    Parquet reader makes them: float64 for a float or integer spec column)."""
    return values.dtype == np.float64


__all__ = [
    "EXACT_FLOAT",
    "TEXT_TYPES",
    "is_typed_numbers",
    "number_text",
    "raw_text",
    "spelled_numbers",
]
