"""Step 1 of training: the labelled rows the model learns from, read from the store
(on the engine: in parallel ranges on Dask) and checked before any fitting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlcycle.engine import LOCAL, Engine
from mlcycle.errors import TrainingError
from mlcycle.spec import NUMBER_LIMIT, DatasetSpec, value_text
from mlcycle.store.base import BATCHES, Store, as_datetime
from mlcycle.store.columns import TextColumn, schema_for
from mlcycle.store.lease import describe_holder, live_holder
from mlcycle.train.holdout import EvaluationSet, evaluation_set, id_positions, lines_digest
from mlcycle.train.lean import give_back_memory


@dataclass(frozen=True)
class Snapshot:
    """The labelled rows training uses, sorted by id so the split is reproducible."""

    X: pd.DataFrame
    y: np.ndarray
    ids: Sequence[str]
    """Each row's id as text, in row order (Arrow text: `TextColumn`)."""
    data_hash: str
    batch_ids: list[str]
    batch_statuses: dict[str, str] = field(default_factory=dict)
    row_hashes: Sequence[str] = field(default_factory=list)
    """Each row's content hash (the ETL's `_hash`), in the order of `ids`."""
    positions: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Each id's hold-out position (`mlcycle.train.holdout.id_positions`)."""
    sensitive: pd.DataFrame | None = None
    """The spec's sensitive columns, aligned with `X` (inputs or not)."""
    loaded: list[str] | None = None
    """When the rows' ETL batches ran: the first start and the last finish (ISO 8601)."""
    total: int | None = None
    """The labelled rows in the store when the rows here are only some of them (a fit on
    the cluster: the hold-out and a sample of the training part); None: all are here."""
    class_counts: np.ndarray | None = None
    """Rows per class over all `total` rows (None: count `y`)."""

    @property
    def rows(self) -> int:
        """The labelled rows the model learned from and was judged on."""
        return len(self.ids) if self.total is None else self.total

    def label_counts(self, classes: int) -> np.ndarray:
        """Rows per class index (0..classes-1) over all the snapshot's rows."""
        if self.class_counts is not None:
            return np.pad(self.class_counts, (0, max(0, classes - len(self.class_counts))))
        return np.bincount(self.y, minlength=classes)

    def evaluation_set(self, fraction: float) -> EvaluationSet:
        """The hold-out rows below `fraction`: the rows a decision is measured on."""
        return evaluation_set(self.X, self.y, self.ids, self.row_hashes, self.positions, fraction)


def load_snapshot(store: Store, spec: DatasetSpec, engine: Engine = LOCAL) -> Snapshot:
    """Read the newest labelled rows and check they can train a model (on the dask
    engine, MongoDB is read by the workers in parallel `_id` ranges).

    The rows arrive as Arrow columns typed by the spec, never as Python documents; the
    model's frame holds 8 bytes per row and feature (numbers, or references to the
    few distinct category texts), ids and row hashes stay Arrow text."""
    check_trainable(store, spec)
    target = spec.target.column  # type: ignore[union-attr]
    table = engine.read_columns(store, spec.name, read_schema(spec), target)
    check_table(table, spec, store)
    rows = snapshot_rows(table, spec)
    del table
    give_back_memory()
    check_classes(np.bincount(rows.y), spec)
    return Snapshot(
        X=rows.X,
        y=rows.y,
        ids=rows.ids,
        data_hash=lines_digest(rows.ids, rows.row_hashes),
        row_hashes=rows.row_hashes,
        positions=id_positions(rows.ids),
        sensitive=rows.sensitive,
        batch_ids=rows.batch_ids,
        **batch_facts(store, rows.batch_ids),
    )


def check_trainable(store: Store, spec: DatasetSpec) -> None:
    """TrainingError when the spec has no target or a load of the dataset is running."""
    if spec.target is None:
        raise TrainingError(f"dataset spec {spec.name!r} has no target column")
    holder = live_holder(store, spec.name)
    if holder is not None:
        raise TrainingError(
            f"dataset {spec.name!r} is being loaded right now by {describe_holder(holder)}: "
            "train when it has finished, so a model never learns from half a load"
        )


def check_table(table: pa.Table, spec: DatasetSpec, store: Store) -> None:
    """TrainingError when the read rows cannot train: none, or a feature never set."""
    if table.num_rows == 0:
        raise TrainingError(
            f"no labelled rows for dataset {spec.name!r} in the {store.name} store: "
            "run `mlcycle etl` on files that have the target column first"
        )
    empty = [c for c in spec.feature_columns if table[c].null_count == table.num_rows]
    if empty:
        raise TrainingError(
            f"feature column(s) {', '.join(empty)} have no values in the snapshot "
            "(missing from the stored rows?); fix the data or the spec's features"
        )


@dataclass
class Rows:
    """Stored rows converted for training, in id order (`snapshot_rows`)."""

    X: pd.DataFrame
    y: np.ndarray
    ids: TextColumn
    row_hashes: TextColumn
    batch_ids: list[str]
    sensitive: pd.DataFrame | None


def snapshot_rows(table: pa.Table, spec: DatasetSpec) -> Rows:
    """Read columns (`read_schema`) as training's rows, sorted by id: the model frame,
    the classes, ids, row hashes, ETL batches and sensitive columns; numbers out of range
    and unmapped labels refused, naming them. Used on the whole snapshot and, on a
    cluster, on each worker's `_id` range."""
    import pyarrow.compute as pc

    assert spec.target is not None
    order = pc.sort_indices(table[spec.id_column]).to_numpy()  # by id: a reproducible split
    columns = _Columns(table, order)
    del table  # each column's memory goes once it is converted
    y = _labels(columns, spec.target.column, spec.target.labels)
    ids = columns.text(spec.id_column)
    row_hashes = columns.text("_hash")
    batches, _ = columns.codes("_batch_id")
    sensitive = (
        pd.DataFrame({c: columns.raw(c) for c in spec.sensitive}) if spec.sensitive else None
    )
    X = _model_frame(columns, spec)
    _check_numbers(X, spec, ids)
    return Rows(X, y, ids, row_hashes, sorted(str(b) for b in batches), sensitive)


def read_schema(spec: DatasetSpec) -> pa.Schema:
    """The stored columns training reads, typed by the spec."""
    assert spec.target is not None
    extra = [c for c in spec.sensitive if c not in spec.feature_columns]
    names = [spec.id_column, *spec.feature_columns, *extra, spec.target.column, "_hash"]
    return schema_for(spec, [*names, "_batch_id"])


class _Columns:
    """The read table's columns in id order, each converted once and then let go."""

    def __init__(self, table: pa.Table, order: np.ndarray) -> None:
        self.columns = dict(zip(table.column_names, table.columns, strict=True))
        self.order = order
        self.rows = table.num_rows

    def _take(self, name: str) -> pa.ChunkedArray:
        return self.columns.pop(name)

    def text(self, name: str) -> TextColumn:
        import pyarrow.compute as pc

        column = self._take(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        return TextColumn(pc.take(pc.cast(column, pa.string()), pa.array(self.order)))

    def numbers(self, name: str) -> np.ndarray:
        import pyarrow.compute as pc

        column = pc.cast(self._take(name), pa.float64())
        return np.asarray(column.fill_null(np.nan).to_numpy())[self.order]

    def codes(self, name: str, keep: bool = False) -> tuple[list[Any], np.ndarray]:
        """The column's distinct present values, and each row's place among them (-1
        for a null), in id order."""
        import pyarrow.compute as pc

        column = self.columns[name] if keep else self._take(name)
        if pa.types.is_dictionary(column.type):
            column = column.unify_dictionaries()
            values = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
            where = np.concatenate(
                [np.zeros(0, np.int64)]
                + [c.indices.cast(pa.int64()).fill_null(-1).to_numpy() for c in column.chunks]
            )
            present = np.unique(where[where >= 0])
            where = np.where(where >= 0, np.searchsorted(present, where), -1)
            values = [values[i] for i in present]
        else:
            found = pc.drop_null(column.unique())
            values = found.to_pylist()
            where = pc.index_in(column, value_set=found).cast(pa.int64()).fill_null(-1)
            where = np.asarray(where.to_numpy())
        return values, where[self.order]

    def raw(self, name: str) -> np.ndarray | pd.Series:
        """A stored column as the store's documents hold it: text and booleans as
        Python objects (None when missing), numbers as float64 or int64."""
        column = self.columns[name]
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_string(kind) or pa.types.is_boolean(kind):
            values, where = self.codes(name, keep=True)
            return _lookup([*values, None], where)
        return column.take(pa.array(self.order)).to_pandas()


def _labels(columns: _Columns, target: str, labels: dict[str, int]) -> np.ndarray:
    """Each stored target value's class (text, number or boolean, compared as text)."""
    found, where = columns.codes(target)
    codes = [labels.get(value_text(v)) for v in found]
    bad = sorted(str(v) for v, code in zip(found, codes, strict=True) if code is None)
    if bad:
        raise TrainingError(f"target values {bad} have no label mapping in the spec")
    return np.asarray(codes, dtype=np.int64)[where]


def check_classes(counts: np.ndarray, spec: DatasetSpec) -> None:
    """TrainingError when the rows (`counts` per class) hold fewer than two classes."""
    assert spec.target is not None
    present = np.flatnonzero(counts)
    if len(present) < 2:
        names = {v: k for k, v in spec.target.labels.items()}
        only = names.get(int(present[0]), str(present[0])) if len(present) else "none"
        raise TrainingError(
            f"only one class ({only!r}) among {int(counts.sum())} labelled rows: "
            "a classifier needs at least two"
        )


def _model_frame(columns: _Columns, spec: DatasetSpec) -> pd.DataFrame:
    """`mlcycle.train.features.model_frame` on Arrow columns: numbers as float64 (NaN
    when missing), categories and booleans as their canonical text (NaN when missing),
    each distinct text one shared object."""
    out: dict[str, pd.Series] = {}
    for name in spec.numeric_features:
        out[name] = pd.Series(columns.numbers(name), dtype=np.float64)
    for name in spec.categorical_features:
        found, where = columns.codes(name)
        # object, not pandas' text dtype: scikit-learn takes the column as an object
        # array, and a text column would make a new Python string per row each time
        texts = [value_text(v) for v in found]
        out[name] = pd.Series(_lookup([*texts, np.nan], where), dtype=object)
    return pd.DataFrame(out)[spec.numeric_features + spec.categorical_features]


def _lookup(values: list[Any], where: np.ndarray) -> np.ndarray:
    """Each row's entry of `values` by its place (-1: the last entry), as an object
    array sharing the entries."""
    table = np.empty(len(values), dtype=object)
    table[:] = values
    return table[where]


def _check_numbers(X: pd.DataFrame, spec: DatasetSpec, ids: TextColumn) -> None:
    numbers = X[spec.numeric_features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) & ~np.isnan(numbers) | (
        np.abs(np.nan_to_num(numbers)) > NUMBER_LIMIT
    )
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        where = ", ".join(
            f"{ids[int(r)]} ({', '.join(np.array(spec.numeric_features)[bad[r]])})"
            for r in rows[:10]
        )
        raise TrainingError(
            f"{len(rows)} stored row(s) hold a non-finite or out-of-range number (beyond "
            f"±{NUMBER_LIMIT:g}): {where}. Fix them at the source and rerun `mlcycle etl`"
        )


def batch_facts(store: Store, batch_ids: list[str]) -> dict[str, Any]:
    """The rows' ETL batches: each one's status, and when they ran (first to last)."""
    wanted = set(batch_ids)
    found = [b for b in store.find(BATCHES) if str(b.get("_id")) in wanted]
    starts = [as_datetime(b["started_at"]) for b in found if b.get("started_at")]
    ends = [as_datetime(b["finished_at"]) for b in found if b.get("finished_at")]
    return {
        "batch_statuses": {str(b["_id"]): str(b.get("status")) for b in found},
        "loaded": [min(starts).isoformat(), max(ends or starts).isoformat()] if starts else None,
    }


def profile(snapshot: Snapshot, spec: DatasetSpec) -> dict[str, Any]:
    """What `mlcycle preprocess` prints: rows, missing share per column, class balance."""
    assert spec.target is not None
    names = {v: k for k, v in spec.target.labels.items()}
    counts = pd.Series(snapshot.y).map(names).value_counts()
    return {
        "rows": len(snapshot.ids),
        "data_hash": snapshot.data_hash,
        "etl_batches": snapshot.batch_ids,
        "missing_share": {c: round(float(snapshot.X[c].isna().mean()), 4) for c in snapshot.X},
        "class_balance": {str(k): int(v) for k, v in counts.items()},
    }
