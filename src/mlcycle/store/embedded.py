"""Embedded default store: one SQLite file from the standard library, no server.

Each collection is a table `(id TEXT PRIMARY KEY, hash TEXT, doc BLOB)` holding the
document as JSON; upserts use `INSERT .. ON CONFLICT DO UPDATE` in one transaction per
batch (measured at ~57k rows/s here), and WAL mode lets readers run beside a writer.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from mlcycle.errors import StoreUnavailable
from mlcycle.store.base import LOCKS, Document, as_utc

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _table(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid collection name {name!r}")
    return f'"{name}"'


F = TypeVar("F", bound=Callable[..., Any])


def _sqlite_errors(method: F) -> F:
    """SQLite errors as StoreUnavailable naming the file (a lock held by another process
    past the busy timeout, a read-only or corrupt file), never a traceback."""

    @functools.wraps(method)
    def wrapper(self: EmbeddedStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            hint = (
                ": another process holds it (an ETL or a training run?); retry when it is done"
                if "locked" in str(err)
                else ""
            )
            raise StoreUnavailable(f"embedded store {self.path}: {err}{hint}") from err

    return wrapper  # type: ignore[return-value]


def _dumps(doc: Document | list[Document]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=str)


READ_ROWS = 50_000
"""Stored documents a columnar read parses at once (`read_columns`)."""
APPEND_ROWS = 256
"""Most documents an `append` writes in one statement (two parameters each: far below
SQLite's smallest limit on parameters, 999)."""
APPEND_BYTES = 4 * 1024 * 1024
"""A statement's documents stop at about this many serialised bytes (a big batch's log
entry is ~1 MB): what an `append` holds at once stays bounded."""


def _insert_rows(conn: sqlite3.Connection, table: str, params: list[str | bytes]) -> None:
    """INSERT OR IGNORE (id, doc) pairs, flat in `params`, in order: APPEND_ROWS at a
    time, the rest in statements of 128, 64, ... 1 rows."""
    start, total = 0, len(params) // 2
    size = APPEND_ROWS
    while start < total:
        while size > total - start:
            size //= 2
        sql = _INSERT.get((table, size))
        if sql is None:
            sql = _INSERT[(table, size)] = (
                f"INSERT OR IGNORE INTO {table} (id, hash, doc) VALUES "
                + ",".join(["(?, NULL, ?)"] * size)
            )
        conn.execute(sql, params[2 * start : 2 * (start + size)])
        start += size


_INSERT: dict[tuple[str, int], str] = {}


def _rows(docs: Sequence[Document], with_hash: bool) -> Iterator[tuple[str, Any, bytes]]:
    """Rows for executemany, made one at a time: orjson's output keeps its whole
    working buffer (~4 KiB), so a list of 100,000 serialised documents held ~400 MB."""
    for d in docs:
        yield str(d["_id"]), d.get("_hash") if with_hash else None, _dumps(d)


class EmbeddedStore:
    """A Store on a local SQLite file; connects lazily, safe to share between threads."""

    name = "embedded"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._file = False  # `_conn` is the file's (not the empty in-memory stand-in)
        self._lock = threading.RLock()
        self._tables: set[str] = set()
        self._scan_indexes: set[tuple[str, tuple[str, ...]]] = set()

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.path)!r})"

    @property
    def conn(self) -> sqlite3.Connection:
        """The file's connection; before the file exists, reads get an empty database
        in memory instead, so a command that only reads (or fails first) never leaves a
        store file behind. The first write (`_for_writing`) opens (and makes) the file."""
        if not self._file:
            if not self.path.exists():
                if self._conn is None:
                    self._conn = sqlite3.connect(
                        ":memory:", check_same_thread=False, isolation_level=None
                    )
                return self._conn
            self._for_writing()  # another process made the file since: read it
        if self._conn is None:
            self._file = True
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=10000")
            except (sqlite3.Error, OSError) as err:
                raise StoreUnavailable(
                    f"cannot open the embedded store {self.path}: {err}"
                ) from err
            self._conn = conn
        return self._conn

    def _for_writing(self) -> None:
        """Before a write: the file's connection in place of the in-memory stand-in."""
        with self._lock:
            if not self._file and self._conn is not None:
                self._conn.close()
                self._conn = None
                self._tables.clear()
                self._scan_indexes.clear()
            self._file = True

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _ensure(self, collection: str) -> str:
        table = _table(collection)
        if collection not in self._tables:
            with self._lock:
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} "
                    "(id TEXT PRIMARY KEY, hash TEXT, doc BLOB NOT NULL)"
                )
            self._tables.add(collection)
        return table

    def _exists(self, collection: str) -> bool:
        if collection in self._tables:
            return True
        with self._lock:
            row = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (collection,)
            ).fetchone()
        return row is not None

    @_sqlite_errors
    def ping(self) -> None:
        try:
            with self._lock:
                self.conn.execute("SELECT 1").fetchone()
        except sqlite3.Error as err:
            raise StoreUnavailable(f"embedded store {self.path} is not usable: {err}") from err

    @_sqlite_errors
    def fetch_hashes(self, dataset: str, ids: Sequence[str]) -> dict[str, str]:
        if not ids or not self._exists(dataset):
            return {}
        table = self._ensure(dataset)
        with self._lock:
            # one query per call: the ids travel as one JSON array parameter
            rows = self.conn.execute(
                f"SELECT id, hash FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(list(ids)),),
            )
            return dict(rows)

    @_sqlite_errors
    def fetch_rows(
        self, dataset: str, ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, Document]:
        if not ids or not self._exists(dataset):
            return {}
        table = self._ensure(dataset)
        wanted = list(fields)
        out: dict[str, Document] = {}
        with self._lock:
            rows = self.conn.execute(
                f"SELECT id, doc FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(list(ids)),),
            ).fetchall()
        for ident, blob in rows:
            doc = orjson.loads(blob)
            out[ident] = {f: doc[f] for f in wanted if f in doc}
        return out

    def write_rows(
        self, dataset: str, new: Sequence[Document], changed: Sequence[Document]
    ) -> None:
        self._upsert(dataset, [*new, *changed])

    @_sqlite_errors
    def _upsert(self, collection: str, docs: Sequence[Document]) -> None:
        if not docs:
            return
        self._for_writing()
        table = self._ensure(collection)
        with self._tx() as conn:
            conn.executemany(
                f"INSERT INTO {table} (id, hash, doc) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET hash=excluded.hash, doc=excluded.doc",
                _rows(docs, with_hash=True),
            )

    @_sqlite_errors
    def read_snapshot(
        self, dataset: str, columns: Sequence[str] | None = None, require: str | None = None
    ) -> pd.DataFrame:
        import pandas as pd

        if not self._exists(dataset):
            return pd.DataFrame(columns=list(columns) if columns else None)
        table = self._ensure(dataset)
        loads = orjson.loads
        with self._lock:
            records = [loads(doc) for (doc,) in self.conn.execute(f"SELECT doc FROM {table}")]
        frame = pd.DataFrame.from_records(records)
        if require is not None and len(frame):
            frame = frame[frame[require].notna()] if require in frame else frame.iloc[0:0]
        if columns is not None:
            frame = frame.reindex(columns=list(columns))
        return frame.reset_index(drop=True)

    @_sqlite_errors
    def read_columns(self, dataset: str, schema: pa.Schema, require: str | None = None) -> pa.Table:
        """The rows as Arrow columns: SQLite joins a chunk of stored documents into one
        JSON-lines text, pyarrow's reader types it by `schema`; memory holds one chunk's
        text beside the columns read so far."""
        from mlcycle.store import columns

        if not self._exists(dataset):
            return schema.empty_table()
        table = self._ensure(dataset)
        parts: list[Future[pa.Table]] = []
        last = -(2**63)
        query = (
            f"SELECT max(r), CAST(group_concat(doc, char(10)) AS BLOB) FROM "
            f"(SELECT rowid AS r, doc FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?)"
        )

        def parse(text: bytes) -> pa.Table:
            return columns.kept(columns.from_json_lines(text, schema, dataset), require, schema)

        # SQLite joins the next chunk while a thread parses this one (both let go of
        # the interpreter), so the two steps overlap on two cores
        with self._lock, ThreadPoolExecutor(1, thread_name_prefix="mlcycle-read") as pool:
            self.conn.execute("BEGIN")  # one read transaction: every chunk sees the same rows
            try:
                while True:
                    last_row, text = self.conn.execute(query, (last, READ_ROWS)).fetchone()
                    if last_row is None:
                        break
                    last = last_row
                    parts.append(pool.submit(parse, text))
                    if len(parts) > 1:
                        parts[-2].result()  # at most one chunk's text waits: bounded memory
            finally:
                self.conn.execute("COMMIT")
        return columns.concat([p.result() for p in parts], schema)

    def put(self, collection: str, docs: Sequence[Document]) -> None:
        self._upsert(collection, docs)

    @_sqlite_errors
    def append(self, collection: str, docs: Sequence[Document]) -> None:
        if not docs:
            return
        self._for_writing()
        if not all("_id" in doc for doc in docs):
            raise KeyError("every appended document needs an _id")
        table = self._ensure(collection)
        # A few statements a batch, not one a document: sqlite3 lets go of the interpreter
        # around every statement it steps, and a writer thread beside a busy one (the
        # prediction log beside the API) then waits for it once a row (~0.5 ms a document
        # instead of a few µs, slowing the busy thread too). Each statement inserts up to
        # APPEND_ROWS rows bound as parameters (no JSON for SQLite to parse); the row
        # counts are powers of two, so the statements are always the same few and stay
        # prepared in sqlite3's cache.
        rows: list[str | bytes] = []
        size = 0
        with self._tx() as conn:
            for ident, _, blob in _rows(docs, with_hash=False):  # a statement's worth at a time
                rows += (ident, blob)
                size += len(blob)
                if len(rows) == 2 * APPEND_ROWS or size >= APPEND_BYTES:
                    _insert_rows(conn, table, rows)
                    rows, size = [], 0
            _insert_rows(conn, table, rows)

    @_sqlite_errors
    def find(
        self, collection: str, match: Mapping[str, Any] | None = None, limit: int = 0
    ) -> list[Document]:
        if not self._exists(collection):
            return []
        table = self._ensure(collection)
        with self._lock:
            docs = [
                orjson.loads(d)
                for (d,) in self.conn.execute(f"SELECT doc FROM {table} ORDER BY rowid")
            ]
        if match:
            docs = [d for d in docs if all(d.get(k) == v for k, v in match.items())]
        return docs[-limit:] if limit else docs

    @_sqlite_errors
    def count(self, collection: str, match: Mapping[str, Any] | None = None) -> int:
        if not self._exists(collection):
            return 0
        if match:
            return len(self.find(collection, match))
        with self._lock:
            (n,) = self.conn.execute(f"SELECT COUNT(*) FROM {self._ensure(collection)}").fetchone()
        return int(n)

    def scan(
        self,
        collection: str,
        match: Mapping[str, Any] | None = None,
        since: datetime | None = None,
        chunk: int = 10_000,
    ) -> Iterator[list[Document]]:
        loads = orjson.loads
        for texts in self.scan_json(collection, match, since, chunk):
            yield list(map(loads, texts))

    def scan_json(
        self,
        collection: str,
        match: Mapping[str, Any] | None = None,
        since: datetime | None = None,
        chunk: int = 10_000,
    ) -> Iterator[list[bytes]]:
        """`scan` without decoding: each document as the JSON text it is stored as, for
        readers that parse many at once (pyarrow's JSON reader)."""
        if not self._exists(collection):
            return
        table = self._ensure(collection)
        where, params = ["1"], []
        for key, value in (match or {}).items():
            if not _NAME.match(key):
                raise ValueError(f"invalid field name {key!r}")
            where.append(f"json_extract(doc, '$.{key}') = ?")
            params.append(value)
        ts = "json_extract(doc, '$.ts')"
        if since is not None:
            # `ts` is stored as orjson's RFC 3339 text, which sorts in time order
            where.append(f"{ts} >= ?")
            params.append(orjson.dumps(as_utc(since)).decode().strip('"'))
        keys = tuple(match or ())
        if (collection, keys) not in self._scan_indexes:
            # equality fields, then ts: the pages and `since` walk one index, newest first
            name = "_".join((collection, *keys, "ts"))
            if not _NAME.match(name):
                name = f"ix_{hashlib.sha1(name.encode()).hexdigest()[:20]}"
            parts = [f"json_extract(doc, '$.{k}')" for k in keys]
            with self._lock:
                self.conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_table(name)} ON {table} "
                    f"({', '.join([*parts, ts, 'id'])})"
                )
            self._scan_indexes.add((collection, keys))
        sql = f"SELECT doc FROM {table} WHERE {' AND '.join(where)} ORDER BY {ts} DESC, id DESC"
        first = itemgetter(0)
        try:
            with self._lock:
                cursor = self.conn.execute(sql, params)
            while True:
                with self._lock:
                    rows = cursor.fetchmany(chunk)
                if not rows:
                    return
                yield list(map(first, rows))
        except sqlite3.Error as err:
            raise StoreUnavailable(f"embedded store {self.path}: {err}") from err

    @_sqlite_errors
    def try_lock(
        self, name: str, owner: str, lease_seconds: float, info: Mapping[str, Any]
    ) -> tuple[bool, Document | None]:
        self._for_writing()
        table = self._ensure(LOCKS)
        now = time.time()
        with self._tx() as conn:  # BEGIN IMMEDIATE: one writer decides at a time
            row = conn.execute(f"SELECT doc FROM {table} WHERE id = ?", (name,)).fetchone()
            held = orjson.loads(row[0]) if row else None
            if held is not None and held.get("expires_at", 0) > now and held.get("owner") != owner:
                return False, held
            doc = {**info, "_id": name, "owner": owner, "expires_at": now + lease_seconds}
            conn.execute(
                f"INSERT INTO {table} (id, hash, doc) VALUES (?, NULL, ?) "
                "ON CONFLICT(id) DO UPDATE SET doc=excluded.doc",
                (name, _dumps(doc)),
            )
        return True, held

    @_sqlite_errors
    def renew_lock(self, name: str, owner: str, lease_seconds: float) -> bool:
        self._for_writing()
        table = self._ensure(LOCKS)
        with self._tx() as conn:
            row = conn.execute(f"SELECT doc FROM {table} WHERE id = ?", (name,)).fetchone()
            held = orjson.loads(row[0]) if row else None
            if held is None or held.get("owner") != owner:
                return False
            held["expires_at"] = time.time() + lease_seconds
            conn.execute(f"UPDATE {table} SET doc = ? WHERE id = ?", (_dumps(held), name))
        return True

    @_sqlite_errors
    def release_lock(self, name: str, owner: str) -> None:
        self._for_writing()
        table = self._ensure(LOCKS)
        with self._tx() as conn:
            conn.execute(
                f"DELETE FROM {table} WHERE id = ? AND json_extract(doc, '$.owner') = ?",
                (name, owner),
            )

    def read_lock(self, name: str) -> Document | None:
        found = [d for d in self.find(LOCKS) if d.get("_id") == name]
        return found[0] if found else None

    @_sqlite_errors
    def drop(self, collection: str) -> None:
        self._for_writing()
        with self._lock:
            self.conn.execute(f"DROP TABLE IF EXISTS {_table(collection)}")
        self._tables.discard(collection)
        self._scan_indexes = {k for k in self._scan_indexes if k[0] != collection}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._file = False
        self._tables.clear()
        self._scan_indexes.clear()
