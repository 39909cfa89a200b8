"""A window of the prediction log, read column-wise.

Log documents come newest first in chunks and become arrays and counts without a Python
loop per document: from the embedded store, a chunk of stored JSON texts is parsed at
once by pyarrow's JSON reader (C++, typed by the spec); from MongoDB (or when a chunk
does not fit the typed schema) the decoded documents go through map/itemgetter/chain.
Memory holds one chunk plus the window's columns (8 bytes per number and score,
counts per category).
"""

from __future__ import annotations

import gc
import io
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store, as_datetime, predictions_collection

JSON_CHUNK = 100_000
JSON_BLOCK = 8 << 20
"""Bytes of JSON text pyarrow parses as one block: a larger page comes back in chunks."""
DOC_CHUNK = 10_000


@dataclass
class Window:
    """The logged predictions of one model version, column by column."""

    model_name: str
    version: str
    requests: int = 0
    rows: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, Counter[Any]] = field(default_factory=dict)
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    predicted: Counter[Any] = field(default_factory=Counter)
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    malformed: int = 0
    """Log documents skipped because they are not prediction log entries (counted)."""
    stamps: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Each row's request time, seconds since the epoch (aligned with `ids`)."""
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    """Each row's value of the spec's sensitive columns that are categorical model
    inputs (aligned with `ids`; None when missing): what fairness is measured by."""


def well_formed(doc: Any, spec: DatasetSpec) -> bool:
    """A prediction log entry the window can take: its lists as long as its `rows`."""
    try:
        n = doc["rows"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or doc["ts"] is None:
            return False
        if len(doc["ids"]) != n or len(doc["labels"]) != n:
            return False
        if not isinstance(doc["probabilities"], list) or not all(
            isinstance(p, int | float) and not isinstance(p, bool) for p in doc["probabilities"]
        ):
            return False
        feats = doc["features"]
        return all(
            name not in feats or (isinstance(feats[name], list) and len(feats[name]) == n)
            for name in spec.feature_columns
        )
    except (KeyError, TypeError):
        return False


@contextmanager
def _no_gc() -> Iterator[None]:
    """Decoding millions of small, acyclic log documents makes the cyclic collector rescan
    everything read so far again and again (measured: 3-4x slower); reference counting
    frees them all the same."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Columns:
    """Accumulates chunks into the window's columns."""

    def __init__(self, spec: DatasetSpec, win: Window, last: int) -> None:
        self.spec = spec
        self.win = win
        self.last = last
        self.numeric: dict[str, list[np.ndarray]] = {c: [] for c in spec.numeric_features}
        win.categorical = {c: Counter() for c in spec.categorical_features}
        self.scores: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []
        self.groups: dict[str, list[np.ndarray]] = {
            c: [] for c in spec.sensitive if c in spec.categorical_features
        }
        self.newest: Any = None
        self.oldest: Any = None

    @property
    def full(self) -> bool:
        return bool(self.last) and self.win.rows >= self.last

    def _keep(self, rows: np.ndarray) -> int:
        """How many of a chunk's documents (newest first) fit in `last` rows."""
        if not self.last or self.win.rows + int(rows.sum()) <= self.last:
            return len(rows)
        return int(np.searchsorted(np.cumsum(rows), self.last - self.win.rows, side="left")) + 1

    def _stamps(self, hi: Any, lo: Any, requests: int, rows: int) -> None:
        self.newest = hi if self.newest is None or hi > self.newest else self.newest
        self.oldest = lo if self.oldest is None or lo < self.oldest else self.oldest
        self.win.requests += requests
        self.win.rows += rows

    def add_docs(self, docs: list[Any]) -> None:
        good = [d for d in docs if well_formed(d, self.spec)]
        self.win.malformed += len(docs) - len(good)
        docs = good
        if not docs:
            return
        rows = np.fromiter(map(itemgetter("rows"), docs), dtype=np.int64, count=len(docs))
        keep = self._keep(rows)
        docs, rows = docs[:keep], rows[:keep]
        feats = list(map(itemgetter("features"), docs))
        for name in self.spec.numeric_features:
            self.numeric[name].append(np.array(_column(feats, rows, name), dtype=np.float64))
        for name in self.spec.categorical_features:
            values = _column(feats, rows, name)
            self.win.categorical[name].update(values)
            if name in self.groups:
                self.groups[name].append(_objects(values))
        flat = chain.from_iterable
        self.scores.append(
            np.array(list(flat(map(itemgetter("probabilities"), docs))), dtype=np.float64)
        )
        labels = list(flat(map(itemgetter("labels"), docs)))
        self.win.predicted.update(labels)
        self.labels.append(np.array(labels, dtype=object))
        self.ids.append(_objects(list(flat(map(itemgetter("ids"), docs)))))
        stamps = list(map(itemgetter("ts"), docs))
        self.stamps.append(np.repeat(_epoch(stamps), rows))
        self._stamps(max(stamps), min(stamps), len(docs), int(rows.sum()))

    def add_table(self, table: Any) -> None:
        import pyarrow.compute as pc

        rows = table.column("rows").to_numpy()
        keep = self._keep(rows)
        if keep < len(rows):
            table, rows = table.slice(0, keep), rows[:keep]
        table = table.combine_chunks()
        feats = table.column("features").chunk(0)
        for name in self.spec.numeric_features:
            values = feats.field(name).flatten().to_numpy(zero_copy_only=False)
            self.numeric[name].append(values.astype(np.float64, copy=False))
        for name in self.spec.categorical_features:
            values = feats.field(name).flatten()
            self.win.categorical[name].update(_value_counts(values))
            if name in self.groups:
                self.groups[name].append(values.to_numpy(zero_copy_only=False).astype(object))
        self.scores.append(
            table.column("probabilities").chunk(0).flatten().to_numpy(zero_copy_only=False)
        )
        labels = table.column("labels").chunk(0).flatten()
        self.win.predicted.update(_value_counts(labels))
        self.labels.append(labels.to_numpy(zero_copy_only=False).astype(object))
        self.ids.append(table.column("ids").chunk(0).flatten().to_numpy(zero_copy_only=False))
        self.stamps.append(
            np.repeat(_epoch(table.column("ts").to_numpy(zero_copy_only=False)), rows)
        )
        span = pc.min_max(table.column("ts"))
        self._stamps(span["max"].as_py(), span["min"].as_py(), table.num_rows, int(rows.sum()))

    def finish(self) -> Window:
        win = self.win
        win.numeric = {
            k: np.concatenate(v) if v else np.empty(0, dtype=np.float64)
            for k, v in self.numeric.items()
        }
        win.scores = np.concatenate(self.scores) if self.scores else np.empty(0)
        win.ids = np.concatenate(self.ids) if self.ids else np.empty(0, dtype=object)
        win.labels = np.concatenate(self.labels) if self.labels else np.empty(0, dtype=object)
        win.stamps = np.concatenate(self.stamps) if self.stamps else np.empty(0)
        win.groups = {
            k: np.concatenate(v) if v else np.empty(0, dtype=object) for k, v in self.groups.items()
        }
        win.first_ts = as_datetime(self.oldest) if self.oldest is not None else None
        win.last_ts = as_datetime(self.newest) if self.newest is not None else None
        return win


def _epoch(stamps: Any) -> np.ndarray:
    """Log times (datetimes, or ISO texts with an offset) as seconds since the epoch, in
    one vectorised parse a chunk."""
    import pandas as pd

    parsed = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601")
    return np.asarray(parsed.astype("int64"), dtype=np.float64) / _TICKS[parsed.dtype.unit]


_TICKS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _value_counts(values: Any) -> dict[Any, int]:
    """An Arrow array's counts per value (None for missing), computed in C++."""
    import pyarrow.compute as pc

    counts = pc.value_counts(values)
    return dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _column(feats: list[dict[str, Any]], rows: np.ndarray, name: str) -> list[Any]:
    try:
        return list(chain.from_iterable(map(itemgetter(name), feats)))
    except KeyError:  # an entry without the column (never within one version): slow path
        return list(
            chain.from_iterable(
                f[name] if name in f else [None] * int(r) for f, r in zip(feats, rows, strict=True)
            )
        )


def _arrow_schema(spec: DatasetSpec) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("ts", pa.string()),
            ("rows", pa.int64()),
            ("ids", pa.list_(pa.string())),
            ("labels", pa.list_(pa.string())),
            ("probabilities", pa.list_(pa.float64())),
            (
                "features",
                pa.struct(
                    [(c, pa.list_(pa.float64())) for c in spec.numeric_features]
                    + [(c, pa.list_(pa.string())) for c in spec.categorical_features]
                ),
            ),
        ]
    )


def _parse(texts: list[bytes], schema: Any) -> Any | None:
    """A chunk of JSON documents as one Arrow table, or None when one of them does not
    fit the typed schema (e.g. numeric ids): the caller decodes that chunk instead."""
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        table = pj.read_json(
            io.BytesIO(b"\n".join(texts)),
            read_options=pj.ReadOptions(block_size=JSON_BLOCK),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(texts):
        return None
    table = table.combine_chunks()  # one chunk a column: the checks below line up
    # a missing list (a document without a column) would shift the flattened columns
    lists = [table.column(c) for c in ("rows", "ids", "labels", "probabilities", "features")]
    lists += [
        chunk.field(name)
        for chunk in table.column("features").chunks
        for name in schema.field("features").type.names
    ]
    if any(column.null_count for column in lists):
        return None
    import pyarrow.compute as pc

    rows = table.column("rows")
    for column in lists[1:]:  # every list as long as its entry's `rows`: else, one by one
        if (
            pa.types.is_list(column.type)
            and not pc.all(pc.equal(pc.list_value_length(column), rows)).as_py()
        ):
            return None
    return table


def read_window(
    store: Store,
    spec: DatasetSpec,
    model_name: str,
    version: str,
    since: datetime | None = None,
    last: int = 0,
) -> Window:
    """The predictions of `model_name` v`version` logged at or after `since`, only the
    newest `last` (0: all), as columns."""
    match = {"model_name": model_name, "model_version": version}
    collection = predictions_collection(spec.name)
    acc = _Columns(spec, Window(model_name, version), last)
    with _no_gc():
        scan_json = getattr(store, "scan_json", None)
        if scan_json is not None and _has_pyarrow():
            import orjson

            schema = _arrow_schema(spec)
            pages = scan_json(collection, match=match, since=since, chunk=JSON_CHUNK)
            for texts in _prefetch(pages):
                table = _parse(texts, schema)
                if table is not None:
                    acc.add_table(table)
                else:
                    acc.add_docs(list(map(_loads_or_none(orjson.loads), texts)))
                if acc.full:
                    break
        else:
            for docs in store.scan(collection, match=match, since=since, chunk=DOC_CHUNK):
                acc.add_docs(docs)
                if acc.full:
                    break
    return acc.finish()


def _loads_or_none(loads: Any) -> Any:
    def load(text: bytes) -> Any:
        try:
            return loads(text)
        except ValueError:  # not JSON: skipped and counted as malformed
            return None

    return load


def _prefetch(pages: Iterator[Any]) -> Iterator[Any]:
    """Fetch the next page in a thread while this one is parsed (SQLite and pyarrow both
    release the GIL, so on two cores the two overlap)."""
    import queue
    import threading

    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                if stop.is_set():
                    break
                slots.put(("page", page))
            slots.put(("end", None))
        except BaseException as err:  # handed to the reader
            slots.put(("error", err))

    worker = threading.Thread(target=produce, name="log-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full slot
            with suppress(queue.Empty):
                slots.get(timeout=0.1)
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def _has_pyarrow() -> bool:
    try:
        import pyarrow.json  # noqa: F401
    except ImportError:
        return False
    return True
