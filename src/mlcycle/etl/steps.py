"""The steps every source shares: the duplicate-id rule, quarantine entries, and the
idempotent load of valid rows (hash-compare, then insert new / update changed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.etl.extract import RECORD_ERROR
from mlcycle.etl.sources import SOURCE_FIELD, Origin
from mlcycle.etl.transform import plan_writes, to_documents
from mlcycle.rules.text import raw_text
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Document, Store

EXCERPT_CHARS = 256
"""Quarantine keeps at most this much of a value; a longer one becomes an excerpt with its
length and SHA-256, so a huge bad field never makes a huge (or >16 MiB) document."""


def now_ms() -> datetime:
    """A UTC timestamp with millisecond precision: a BSON date in MongoDB."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def excerpt(value: Any) -> Any:
    """A raw value as the quarantine stores it: text, or an excerpt of a long text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value)
    if len(text) <= EXCERPT_CHARS:
        return text
    return {
        "excerpt": text[:EXCERPT_CHARS],
        "length": len(text),
        "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
    }


def quarantine_docs(
    raw: pd.DataFrame, issues: pd.DataFrame, origin: Origin, batch_id: str
) -> list[Document]:
    """One quarantine entry per rejected row: where it came from, every failed value
    with its reason, and the raw record (long values cut to excerpts)."""
    if issues.empty:
        return []
    raw = raw_text(raw.reset_index(drop=True).iloc[np.unique(issues["pos"].to_numpy())])
    at = now_ms()
    docs = []
    for pos, group in issues.groupby("pos", sort=True):
        pos = int(pos)
        record = {k: excerpt(v) for k, v in raw.loc[pos].items() if k != RECORD_ERROR}
        errors = [
            {"column": c, "value": excerpt(v), "reason": r}
            for c, v, r in zip(group["column"], group["value"], group["reason"], strict=True)
        ]
        docs.append(
            {
                "_id": origin.quarantine_id(pos),
                "batch_id": batch_id,
                **origin.describe(pos),
                "column": errors[0]["column"],
                "value": errors[0]["value"],
                "reason": errors[0]["reason"],
                "errors": errors,
                "record": record,
                "quarantined_at": at,
            }
        )
    return docs


_ROW_BITS = 40
_KEYS = ("mlcycle id key 1", "mlcycle id key 2")  # two 16-byte SipHash keys: 128 bits an id


def id_hashes(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    values = ids.to_numpy(dtype=object)
    return (
        pd.util.hash_array(values, hash_key=_KEYS[0], categorize=False),
        pd.util.hash_array(values, hash_key=_KEYS[1], categorize=False),
    )


def absence(raw: pd.DataFrame, absent: pd.DataFrame | None, spec: DatasetSpec) -> pd.DataFrame:
    """Per row (positions of `raw`) and spec column with any absence: True where the
    source does not carry the column (missing from the file, or a record without the key).
    Empty (no columns) when the source carries every column on every row."""
    flags: dict[str, np.ndarray] = {}
    n = len(raw)
    for col in spec.columns:
        if col not in raw.columns:
            flags[col] = np.ones(n, dtype=bool)
        elif absent is not None and col in absent.columns:
            flags[col] = absent[col].to_numpy(dtype=bool)
    return pd.DataFrame(flags, index=pd.RangeIndex(n))


def column_set_codes(absent: pd.DataFrame, spec: DatasetSpec, rows: pd.Index) -> np.ndarray:
    """One number per row naming the set of columns its source carried (0: all of them):
    the duplicate-id rule compares rows that said the same things."""
    codes = np.zeros(len(rows), dtype=np.uint64)
    if absent.empty:
        return codes
    order = list(spec.columns)
    for col in absent.columns:
        bit = np.uint64(1) << np.uint64(order.index(col) % 64)
        codes |= np.where(absent[col].to_numpy()[rows.to_numpy()], bit, np.uint64(0))
    return codes


_MIX = np.uint64(0x9E3779B97F4A7C15)


def with_column_set(h2: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    """An id's second hash mixed with its row's column set: the duplicate-id rule's key."""
    return h2 if codes is None or not len(codes) else h2 ^ (codes * _MIX)


class DuplicateTracker:
    """Where each id was first accepted during one run, in 24 bytes an id.

    Ids are kept as two independent 64-bit hashes (a false "duplicate" needs both to
    collide: ~1e-26 for 10 million ids) in sorted arrays, with the part number and row of
    the first occurrence packed in one int. A dict of strings needed ~135 bytes an id, so
    memory grew with the input (5 million ids: ~700 MB)."""

    def __init__(self) -> None:
        self.h1 = np.empty(0, dtype=np.uint64)
        self.h2 = np.empty(0, dtype=np.uint64)
        self.at = np.empty(0, dtype=np.int64)
        self.parts: list[str] = []

    def __len__(self) -> int:
        return len(self.h1)

    def where(self, packed: int, part_no: int) -> str:
        p_no, row = packed >> _ROW_BITS, packed & ((1 << _ROW_BITS) - 1)
        return f"row {row}" if p_no == part_no else f"{self.parts[p_no]} row {row}"

    def _find(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Index into the sorted arrays of each (a, b) seen before, else -1."""
        found = np.full(len(a), -1, dtype=np.int64)
        if not len(self.h1):
            return found
        left = np.searchsorted(self.h1, a, side="left")
        right = np.searchsorted(self.h1, a, side="right")
        for k in np.flatnonzero(right > left).tolist():
            for i in range(int(left[k]), int(right[k])):  # almost always one candidate
                if self.h2[i] == b[k]:
                    found[k] = i
                    break
        return found

    def check(
        self, a: np.ndarray, b: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Ids (as their two hashes) of rows `rows` of the newest part, in order: the
        accept mask, and for each rejected index where its id was first seen."""
        part_no = len(self.parts) - 1
        found = self._find(a, b)
        pairs = pd.DataFrame({"a": a, "b": b})
        repeat = pairs.duplicated(keep="first").to_numpy()
        accept = (found < 0) & ~repeat
        where: dict[int, str] = {}
        if not accept.all():
            first = pairs.groupby(["a", "b"], sort=False).ngroup().to_numpy()
            first_at: dict[int, int] = {}
            for k, g in enumerate(first.tolist()):
                first_at.setdefault(g, k)
            base = part_no << _ROW_BITS
            for k in np.flatnonzero(~accept).tolist():
                prev = (
                    int(self.at[found[k]])
                    if found[k] >= 0
                    else base + int(rows[first_at[int(first[k])]])
                )
                where[k] = f"duplicate id: first seen at {self.where(prev, part_no)}"
        self._add(a[accept], b[accept], (part_no << _ROW_BITS) + rows[accept])
        return accept, where

    def split(
        self, first_row: int, valid: pd.DataFrame, id_column: str, codes: np.ndarray | None = None
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Mark duplicates of ids seen before (in earlier chunks or earlier in this one);
        return (accept mask, issue rows). `valid`'s index holds chunk positions.

        `codes` (see `column_set_codes`): a row is a duplicate only of rows whose source
        carried the same columns; an id seen again with other columns (an unlabelled file
        beside a labelled one) completes the first, it does not contradict it."""
        ids = valid[id_column]
        positions = valid.index.to_numpy(dtype=np.int64)
        a, b = id_hashes(ids)
        b = with_column_set(b, codes)
        accept, where = self.check(a, b, first_row + positions)
        id_list = ids.tolist() if where else []
        rows = [(int(positions[k]), id_column, id_list[k], reason) for k, reason in where.items()]
        return accept, pd.DataFrame(rows, columns=["pos", "column", "value", "reason"])

    def earlier_parts(self, a: np.ndarray, b: np.ndarray, part: int) -> list[int]:
        """Used with ids alone (no row numbers): the latest earlier part that holds each
        of these ids, then `part` becomes their latest holder. Chained this way, every
        part holding an id runs after the one before it."""
        found = self._find(a, b)
        hits = sorted({int(self.at[i]) for i in found[found >= 0].tolist()})
        self.at[found[found >= 0]] = part
        fresh = (found < 0) & ~pd.DataFrame({"a": a, "b": b}).duplicated().to_numpy()
        self._add(a[fresh], b[fresh], np.full(int(fresh.sum()), part, dtype=np.int64))
        return hits

    def _add(self, a: np.ndarray, b: np.ndarray, at: np.ndarray) -> None:
        if not len(a):
            return
        order = np.argsort(a, kind="stable")
        a, b, at = a[order], b[order], at[order]
        where = np.searchsorted(self.h1, a, side="right")
        self.h1 = np.insert(self.h1, where, a)
        self.h2 = np.insert(self.h2, where, b)
        self.at = np.insert(self.at, where, at)


@dataclass
class LoadCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def load_valid(
    store: Store,
    spec: DatasetSpec,
    accepted: pd.DataFrame,
    origin: Origin,
    batch_id: str,
    absent: pd.DataFrame | None = None,
) -> LoadCounts:
    """Upsert valid rows idempotently: only new and changed rows are written (a row
    whose content hash is already stored is left as it is, lineage included).

    `absent` (rows of `accepted` by index, see `absence`): columns the source did not
    carry. They keep their stored values: a row is merged with the stored one before it
    is hashed, so a file without the target never erases a label, and a new row simply
    lacks the field. Rows of one id in `accepted` are applied in order, field by field."""
    if not len(accepted):
        return LoadCounts()
    gaps = None if absent is None or absent.empty else absent.loc[accepted.index]
    if gaps is not None and not gaps.to_numpy().any():
        gaps = None
    if gaps is not None or accepted[spec.id_column].duplicated().any():
        accepted, gaps = fold_by_id(accepted, gaps, spec.id_column)
    if gaps is not None:
        accepted, gaps = merge_stored(store, spec, accepted, gaps)
    docs = to_documents(accepted, spec.id_column, batch_id)
    for doc, ref in zip(docs, origin.refs(accepted.index.tolist()), strict=True):
        doc[SOURCE_FIELD] = ref
    if gaps is not None:  # what neither the source nor the store holds is not written
        for col in gaps.columns:
            for k in np.flatnonzero(gaps[col].to_numpy()).tolist():
                docs[k].pop(col, None)
    stored = store.fetch_hashes(spec.name, [d["_id"] for d in docs])
    plan = plan_writes(docs, stored)
    store.write_rows(spec.name, plan.new, plan.changed)
    return LoadCounts(len(plan.new), len(plan.changed), plan.unchanged)


def fold_by_id(
    rows: pd.DataFrame, gaps: pd.DataFrame | None, id_column: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One row per id, as if the rows were applied one after another: each column takes
    the last value a row carried (absent ones skipped). Kept at the last row's position."""
    ids = rows[id_column]
    if not ids.duplicated().any():
        return rows, gaps
    n = len(rows)
    keys = pd.factorize(ids)[0]
    last = pd.Series(np.arange(n)).groupby(keys).max().to_numpy()
    out = rows.iloc[last].copy()
    if gaps is None:
        return out, None
    folded = {}
    for col in gaps.columns:
        carried = np.where(gaps[col].to_numpy(), -1, np.arange(n))
        pick = pd.Series(carried).groupby(keys).max().to_numpy()
        values = rows[col].iloc[np.maximum(pick, 0)].to_numpy()
        out[col] = pd.Series(values, index=out.index, dtype=rows[col].dtype)
        folded[col] = pick < 0
    return out, pd.DataFrame(folded, index=out.index)


def merge_stored(
    store: Store, spec: DatasetSpec, rows: pd.DataFrame, gaps: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill the absent cells of `rows` with the stored values of their ids (typed as the
    column is); what is left absent is neither in the source nor in the store."""
    need = gaps.to_numpy().any(axis=1)
    ids = rows[spec.id_column].to_numpy()[need].tolist()
    stored = store.fetch_rows(spec.name, ids, list(gaps.columns))
    if not stored:
        return rows, gaps
    rows = rows.copy()
    gaps = gaps.copy()
    row_ids = rows[spec.id_column].tolist()
    for col in gaps.columns:
        hole = gaps[col].to_numpy()
        picks = [k for k in np.flatnonzero(hole).tolist() if col in stored.get(row_ids[k], {})]
        if not picks:
            continue
        values = rows[col].astype(object).to_numpy(copy=True)
        for k in picks:
            values[k] = stored[row_ids[k]][col]
        rows[col] = pd.Series(values, index=rows.index).astype(rows[col].dtype)
        hole = hole.copy()
        hole[picks] = False
        gaps[col] = hole
    return rows, gaps


__all__ = [
    "EXCERPT_CHARS",
    "DuplicateTracker",
    "LoadCounts",
    "absence",
    "column_set_codes",
    "excerpt",
    "fold_by_id",
    "load_valid",
    "merge_stored",
    "now_ms",
    "quarantine_docs",
    "with_column_set",
]
