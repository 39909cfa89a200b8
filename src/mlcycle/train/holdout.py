"""The one evaluation protocol: a hold-out that stays put as the data grows.

A row is in the hold-out when the hash of its id falls below the hold-out fraction
(`test_size`). The hash ignores the seed, the row order and every other row, so a row is
hold-out forever and a new row falls on either side by its own hash: no model ever
learns from a row another model (with the same or a larger fraction) is judged on. Two
models are compared on the rows both held out: those below the smaller of their two
fractions. That set is named by its row count and a hash of its ids and row hashes, so
the same two versions on the same evaluation set always get the same verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlcycle.store.columns import TextColumn

if TYPE_CHECKING:
    import pyarrow as pa

SCHEME = "id-blake2b/v1"
"""Names the hash; recorded with every version so a change of scheme is never silent."""
_PERSON = b"mlcycle-holdout"
_SCALE = float(2**64)
_BLOCK = 1 << 18
"""Rows whose lines `lines_digest` joins at once."""


def id_positions(ids: Iterable[str]) -> np.ndarray:
    """Each id's place in [0, 1): a keyed BLAKE2b hash of the id's text, scaled (the
    8-byte digests joined and read as big-endian integers at once)."""
    blake2b, person = hashlib.blake2b, _PERSON
    raw = b"".join([blake2b(i.encode(), digest_size=8, person=person).digest() for i in ids])
    return np.frombuffer(raw, dtype=">u8").astype(np.float64) / _SCALE


def capped_fraction(test_size: float, max_rows: int | None, rows: int) -> float:
    """The hold-out fraction of a table of `rows` rows: `test_size`, halved until the
    hold-out it holds on average (rows x fraction) is at most `max_rows`. Halving keeps
    the rule: rows below the smaller fraction are held out by both, so the versions
    trained before and after the table grew past a step are judged on rows neither
    learned from; and it moves in steps, so most retrains keep the same hold-out."""
    fraction = test_size
    while max_rows is not None and rows * fraction > max_rows:
        fraction /= 2
    return fraction


def tag_value(fraction: float) -> str:
    """How a version records its hold-out: `<scheme>:<fraction>`."""
    return f"{SCHEME}:{fraction:g}"


def fraction_of(tags: Mapping[str, str], tag: str) -> float | None:
    """The hold-out fraction a version recorded, or None when it predates this scheme
    (its hold-out is unknown: it may have learned from any row)."""
    value = tags.get(tag, "")
    scheme, _, fraction = value.rpartition(":")
    if scheme != SCHEME:
        return None
    try:
        return float(fraction)
    except ValueError:
        return None


@dataclass(frozen=True)
class EvaluationSet:
    """The rows a decision rests on, and their name."""

    X: pd.DataFrame
    y: np.ndarray
    fraction: float
    rows: int
    hash: str

    def describe(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "hash": self.hash,
            "holdout": tag_value(self.fraction),
        }


def lines_digest(
    ids: Sequence[str], row_hashes: Sequence[str], mask: np.ndarray | None = None
) -> str:
    """SHA-256 of "<id>\\t<row hash>\\n" for each row (those `mask` selects), in order:
    joined by Arrow a block of rows at a time, never a Python loop per row."""
    import pyarrow as pa

    def arrow(values: Sequence[str]) -> pa.ChunkedArray:
        if isinstance(values, TextColumn):
            return values.arrow
        return pa.chunked_array([pa.array([str(v) for v in values], pa.string())])

    left, right = arrow(ids), arrow(row_hashes)
    if mask is not None:
        keep = pa.array(np.asarray(mask, dtype=bool))
        left, right = left.filter(keep), right.filter(keep)
    digest = hashlib.sha256()
    for block in line_blocks(left, right):
        digest.update(block)
    return digest.hexdigest()


def line_blocks(left: pa.ChunkedArray, right: pa.ChunkedArray) -> Iterator[bytes]:
    """ "<left>\t<right>\n" for each row, joined by Arrow a block of rows at a time."""
    import pyarrow.compute as pc

    for start in range(0, len(left), _BLOCK):
        lines = pc.binary_join_element_wise(
            left.slice(start, _BLOCK), right.slice(start, _BLOCK), "\t"
        ).to_pylist()
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def rows_set(
    X: pd.DataFrame,
    y: np.ndarray,
    ids: Sequence[str],
    row_hashes: Sequence[str],
    mask: np.ndarray,
    fraction: float = 0.0,
) -> EvaluationSet:
    """The rows `mask` selects, named by the hash of their ids and contents."""
    digest = lines_digest(ids, row_hashes, mask)
    return EvaluationSet(X[mask], y[mask], fraction, int(mask.sum()), digest)


def evaluation_set(
    X: pd.DataFrame,
    y: np.ndarray,
    ids: Sequence[str],
    row_hashes: Sequence[str],
    positions: np.ndarray,
    fraction: float,
) -> EvaluationSet:
    """The rows whose id position is below `fraction`, with their hash."""
    return rows_set(X, y, ids, row_hashes, positions < fraction, fraction)
