"""Transform validated rows into store documents, and apply the duplicate-id rule (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from mlcycle.store.base import Document

HASH_FIELD = "_hash"
BATCH_FIELD = "_batch_id"


def row_hashes(valid: pd.DataFrame) -> list[str]:
    """Content hash of each row's typed, canonical values, as 16 hex digits.

    pandas' vectorised `hash_pandas_object` (SipHash with a fixed key, combined across
    columns): ~30x faster than hashing serialised rows one by one, and independent of
    how rows are chunked. It only has to tell a changed row from an unchanged one.
    """
    hashes = pd.util.hash_pandas_object(valid, index=False, categorize=False).to_numpy()
    text = hashes.astype(">u8").tobytes().hex()
    return [text[i : i + 16] for i in range(0, len(text), 16)]


def to_documents(valid: pd.DataFrame, id_column: str, batch_id: str) -> list[Document]:
    """Documents for the store: `_id` = the id column, plus `_hash` and `_batch_id`.

    NaN and missing values become None (JSON null) through Arrow, so NaN/inf never reach
    the store (inf was already rejected by validation).
    """
    table = pa.Table.from_pandas(valid, preserve_index=False)
    # categorical columns arrive dictionary-encoded; decoding first makes to_pylist ~10x faster
    columns = [
        c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns
    ]
    records = pa.table(columns, names=table.column_names).to_pylist()
    for rec, digest in zip(records, row_hashes(valid), strict=True):
        rec["_id"] = rec[id_column]
        rec[HASH_FIELD] = digest
        rec[BATCH_FIELD] = batch_id
    return records


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
