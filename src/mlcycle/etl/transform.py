"""Transform validated rows into store documents, and apply the duplicate-id rule (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from mlcycle.store.base import Document

HASH_FIELD = "_hash"
BATCH_FIELD = "_batch_id"


def row_hash(values: list[object]) -> str:
    """Content hash of a row's canonical values (in spec column order)."""
    return hashlib.blake2b(orjson.dumps(values), digest_size=16).hexdigest()


def to_documents(valid: pd.DataFrame, id_column: str, batch_id: str) -> list[Document]:
    """Documents for the store: `_id` = the id column, plus `_hash` and `_batch_id`.

    NaN and missing values become None (JSON null) through Arrow, so NaN/inf never reach
    the store (inf was already rejected by validation).
    """
    columns = list(valid.columns)
    records = pa.Table.from_pandas(valid, preserve_index=False).to_pylist()
    docs: list[Document] = []
    append = docs.append
    for rec in records:
        values = [rec[c] for c in columns]
        rec["_id"] = rec[id_column]
        rec[HASH_FIELD] = row_hash(values)
        rec[BATCH_FIELD] = batch_id
        append(rec)
    return docs


@dataclass(frozen=True)
class WritePlan:
    """Which documents are new, which changed, and how many are already stored as-is."""

    new: list[Document]
    changed: list[Document]
    unchanged: int


def plan_writes(docs: list[Document], stored: Mapping[str, str]) -> WritePlan:
    """Split documents by comparing their hash with the stored one (`stored`: id -> hash)."""
    new: list[Document] = []
    changed: list[Document] = []
    unchanged = 0
    for doc in docs:
        old = stored.get(doc["_id"])
        if old is None:
            new.append(doc)
        elif old != doc[HASH_FIELD]:
            changed.append(doc)
        else:
            unchanged += 1
    return WritePlan(new, changed, unchanged)


def duplicate_mask(ids: pd.Series, seen: Mapping[str, object]) -> np.ndarray:
    """Rows whose id already occurred: earlier in this chunk or in `seen` (earlier chunks
    or files of the same run). The rule: the first occurrence in a run wins; later ones
    are rejected, so one run never stores two versions of a row."""
    in_chunk = ids.duplicated(keep="first").to_numpy(bool)
    if not seen:
        return in_chunk
    before = np.fromiter((i in seen for i in ids), dtype=bool, count=len(ids))
    return in_chunk | before
