"""MongoDB backend (pymongo): bulk upserts keyed by `_id`, bounded retries with backoff.

Works with MongoDB >= 5 and with MongoDB-wire servers such as FerretDB. Connection is
lazy; every network call is retried on connection errors with exponential backoff, then
raises StoreUnavailable with the URI's password hidden. All writes are idempotent, so a
retried batch (some of whose documents may already be written) converges.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo import DESCENDING, InsertOne, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from mlcycle.config import redact_uri
from mlcycle.errors import StoreAccessDenied, StoreUnavailable
from mlcycle.store.base import LOCKS, Document, as_utc

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TRANSIENT = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)
_DUPLICATE_KEY = 11000
_AUTH_CODES = {18, 13, 8000}  # AuthenticationFailed, Unauthorized, Atlas auth error


def _first_line(err: OperationFailure) -> str:
    text = str(err.details.get("errmsg") if err.details else err)
    return text.strip().splitlines()[0][:160] if text.strip() else type(err).__name__


def _short(err: BaseException | None) -> str:
    """One line for a pymongo error: the first clause, without the topology dump."""
    text = str(err).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return f"{type(err).__name__}: {text[:160]}"


_WRITE_CHUNK = 5_000
_FERRETDB_UPDATE_CHUNK = 40
"""FerretDB 1.x holds a pooled connection per matched UpdateOne until the whole command
ends; past ~100 in one bulk_write (~50 on its PostgreSQL handler) the pool runs dry and
the server stops answering every client. Updates go to it in small bulk writes; inserts
and real MongoDB keep 5,000-operation chunks."""
_REPLACE_CHUNK = 2_000
_SCAN_THRESHOLD = 2_000


class MongoStore:
    """A Store on MongoDB (or a MongoDB-wire server)."""

    name = "mongodb"

    def __init__(self, uri: str, database: str, timeout_ms: int = 2000, retries: int = 3) -> None:
        self._uri = uri
        self._database = database
        self._timeout_ms = timeout_ms
        self._retries = max(1, retries)
        self._client: MongoClient[Document] | None = None
        self._hash_maps: dict[str, dict[str, str]] = {}
        self._update_chunk: int | None = None
        self._indexed: set[str] = set()

    def __repr__(self) -> str:
        return f"MongoStore({redact_uri(self._uri)!r}, {self._database!r})"

    @property
    def db(self) -> Any:
        if self._client is None:
            try:
                self._client = self._connect()
            except (ConfigurationError, ValueError) as err:
                raise StoreAccessDenied(
                    f"MONGO_URI {redact_uri(self._uri)} is not usable: {str(err)[:200]}"
                ) from err
        return self._client[self._database]

    def _connect(self) -> MongoClient[Document]:
        return MongoClient(
            self._uri,
            serverSelectionTimeoutMS=self._timeout_ms,
            connectTimeoutMS=self._timeout_ms,
            socketTimeoutMS=max(self._timeout_ms * 6, 30_000),
            retryWrites=False,  # FerretDB 1.x has no sessions; we retry idempotently
            appname="mlcycle",
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        where = redact_uri(self._uri)

        def log_retry(state: RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "MongoDB at %s: %s failed (%s); attempt %d of %d, retrying in %.1fs",
                where,
                what,
                _short(state.outcome.exception() if state.outcome else None),
                state.attempt_number,
                self._retries,
                wait,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self._retries),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(_TRANSIENT),
            before_sleep=log_retry,
            reraise=False,
        )
        try:
            return retrying(fn)
        except RetryError as err:
            cause = err.last_attempt.exception()
            raise StoreUnavailable(
                f"MongoDB at {where} is unreachable ({what} failed {self._retries} times: "
                f"{_short(cause)}). Check MONGO_URI and that the server is running, then "
                "rerun: reruns are idempotent."
            ) from cause
        except OperationFailure as err:
            if err.code in _AUTH_CODES:
                raise StoreAccessDenied(
                    f"MongoDB at {where} refused the credentials or the right to {what} "
                    f"({err.code}: {_first_line(err)}). "
                    "Check the user and password in MONGO_URI and the user's roles."
                ) from err
            raise
        except ConfigurationError as err:
            raise StoreAccessDenied(f"MONGO_URI {where} is not usable: {err}") from err

    def _coll(self, name: str) -> Collection[Document]:
        coll: Collection[Document] = self.db[name]
        return coll

    def ping(self) -> None:
        self._call("ping", lambda: self.db.command("ping"))

    def fetch_hashes(self, dataset: str, ids: Sequence[str]) -> dict[str, str]:
        """Hashes of stored rows among `ids`.

        Large requests read the whole id -> hash map once (one scan, cached for this
        store object and kept current by `write_rows`): MongoDB-wire servers without
        `$in` pushdown (FerretDB 1.x) scan the collection for every `$in` query, so one
        scan beats one per chunk. Small requests use `$in`.
        """
        known = self._hash_maps.get(dataset)
        if known is None and len(ids) >= _SCAN_THRESHOLD:
            known = self._hash_maps[dataset] = self._all_hashes(dataset)
        if known is not None:
            return {i: known[i] for i in ids if i in known}
        coll = self._coll(dataset)

        def query() -> list[Document]:
            return list(coll.find({"_id": {"$in": list(ids)}}, {"_hash": 1}))

        return {d["_id"]: str(d.get("_hash")) for d in self._call("read hashes", query)}

    def _all_hashes(self, dataset: str) -> dict[str, str]:
        coll = self._coll(dataset)

        def scan() -> dict[str, str]:
            return {
                d["_id"]: str(d.get("_hash"))
                for d in coll.find({}, {"_hash": 1}, batch_size=50_000)
            }

        return self._call("read hashes", scan)

    def fetch_rows(
        self, dataset: str, ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, Document]:
        if not ids:
            return {}
        coll = self._coll(dataset)
        projection = {f: 1 for f in fields}
        out: dict[str, Document] = {}
        for start in range(0, len(ids), _WRITE_CHUNK):
            chunk = list(ids[start : start + _WRITE_CHUNK])

            def query(chunk: list[str] = chunk) -> list[Document]:
                return list(coll.find({"_id": {"$in": chunk}}, projection))

            for doc in self._call("read rows", query):
                ident = doc.pop("_id")
                out[ident] = doc
        return out

    def write_rows(
        self, dataset: str, new: Sequence[Document], changed: Sequence[Document]
    ) -> None:
        coll = self._coll(dataset)
        known = self._hash_maps.get(dataset)
        for start in range(0, len(new), _WRITE_CHUNK):
            self._insert_or_upsert(coll, new[start : start + _WRITE_CHUNK])
        if self.update_chunk() < _WRITE_CHUNK:  # FerretDB: replace, see _replace
            for start in range(0, len(changed), _REPLACE_CHUNK):
                self._replace(coll, changed[start : start + _REPLACE_CHUNK])
        else:
            for start in range(0, len(changed), _WRITE_CHUNK):
                self._upsert(coll, changed[start : start + _WRITE_CHUNK])
        if known is not None:
            known.update((d["_id"], d["_hash"]) for d in (*new, *changed))

    def _insert_or_upsert(self, coll: Collection[Document], docs: Sequence[Document]) -> None:
        """Insert rows believed new; any that exist by now (a retried batch, a concurrent
        writer) are upserted instead, so the outcome never depends on timing."""

        def run() -> None:
            try:
                coll.bulk_write([InsertOne(dict(d)) for d in docs], ordered=False)
            except BulkWriteError as err:
                errors = err.details.get("writeErrors", [])
                if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                    raise
                self._upsert(coll, [docs[e["index"]] for e in errors])

        self._call("insert", run)

    def _replace(self, coll: Collection[Document], docs: Sequence[Document]) -> None:
        """Changed rows on FerretDB: one `$in` delete and one insert per chunk, retried as a
        unit (idempotent). FerretDB scans the table for every matched update (~50 a second
        on 10,000 rows here) but once per `$in`, so this is ~30x faster than updates and
        never holds its connection pool. It runs under the dataset's lease (no other
        writer, training waits); a crash inside a chunk leaves those rows absent until
        the rerun that the failed batch calls for."""
        ids = [d["_id"] for d in docs]

        def run() -> None:
            coll.delete_many({"_id": {"$in": ids}})
            coll.insert_many([dict(d) for d in docs], ordered=False)

        self._call("replace", run)

    def update_chunk(self) -> int:
        """Update operations per bulk write: small on FerretDB (see above)."""
        if self._update_chunk is None:
            info = self._call("build info", lambda: self.db.client.admin.command("buildInfo"))
            ferret = "ferretdbVersion" in info or "ferretdb" in info
            self._update_chunk = _FERRETDB_UPDATE_CHUNK if ferret else _WRITE_CHUNK
        return self._update_chunk

    def _upsert(self, coll: Collection[Document], docs: Sequence[Document]) -> None:
        if not docs:
            return
        ops = [
            UpdateOne(
                {"_id": d["_id"]}, {"$set": {k: v for k, v in d.items() if k != "_id"}}, upsert=True
            )
            for d in docs
        ]
        step = self.update_chunk()
        for start in range(0, len(ops), step):
            self._call(
                "upsert",
                functools.partial(coll.bulk_write, ops[start : start + step], ordered=False),
            )

    def id_bounds(self, dataset: str, parts: int) -> list[Any]:
        """`parts - 1` ids that cut the collection into about equal `_id` ranges, found
        with a sorted `_id` cursor and `skip` (no `$bucketAuto` or `$sample`, which
        MongoDB-compatible servers such as FerretDB lack)."""
        coll = self._coll(dataset)

        def bounds() -> list[Any]:
            total = coll.estimated_document_count()
            step = total // parts if parts > 1 else 0
            out: list[Any] = []
            for k in range(1, parts if step else 0):
                doc = next(coll.find({}, {"_id": 1}).sort("_id", 1).skip(k * step).limit(1), None)
                if doc is not None and (not out or doc["_id"] > out[-1]):
                    out.append(doc["_id"])
            return out

        return self._call("split the dataset into id ranges", bounds)

    def read_snapshot(
        self,
        dataset: str,
        columns: Sequence[str] | None = None,
        require: str | None = None,
        id_range: tuple[Any, Any] | None = None,
    ) -> pd.DataFrame:
        """Rows (optionally only those whose `_id` is in [lo, hi), None meaning open)."""
        import pandas as pd

        coll = self._coll(dataset)
        query, projection = _snapshot_query(columns, require, id_range)

        def read() -> list[Document]:
            return list(coll.find(query, projection, batch_size=10_000))

        frame = pd.DataFrame.from_records(self._call("read snapshot", read))
        if columns is not None:
            frame = frame.reindex(columns=list(columns))
        return frame

    def read_columns(
        self,
        dataset: str,
        schema: pa.Schema,
        require: str | None = None,
        id_range: tuple[Any, Any] | None = None,
    ) -> pa.Table:
        """The rows as Arrow columns typed by `schema`, decoded a cursor batch at a time
        (memory holds one batch of documents beside the columns read so far)."""
        from mlcycle.store import columns

        coll = self._coll(dataset)
        query, projection = _snapshot_query(schema.names, require, id_range)

        def read() -> pa.Table:
            parts = []
            cursor = coll.find(query, projection, batch_size=READ_BATCH)
            while batch := list(islice(cursor, READ_BATCH)):
                parts.append(
                    columns.kept(columns.from_documents(batch, schema, dataset), None, schema)
                )
            return columns.concat(parts, schema)

        return self._call("read snapshot", read)

    def put(self, collection: str, docs: Sequence[Document]) -> None:
        coll = self._coll(collection)
        for start in range(0, len(docs), _WRITE_CHUNK):
            self._upsert(coll, docs[start : start + _WRITE_CHUNK])

    def append(self, collection: str, docs: Sequence[Document]) -> None:
        if docs:
            self._insert_or_upsert(self._coll(collection), docs)

    def find(
        self, collection: str, match: Mapping[str, Any] | None = None, limit: int = 0
    ) -> list[Document]:
        coll = self._coll(collection)

        def run() -> list[Document]:
            docs = list(coll.find(dict(match or {})))
            return docs[-limit:] if limit else docs

        return self._call("find", run)

    def count(self, collection: str, match: Mapping[str, Any] | None = None) -> int:
        coll = self._coll(collection)
        return int(self._call("count", lambda: coll.count_documents(dict(match or {}))))

    def scan(
        self,
        collection: str,
        match: Mapping[str, Any] | None = None,
        since: datetime | None = None,
        chunk: int = 10_000,
    ) -> Iterator[list[Document]]:
        coll = self._coll(collection)
        base: dict[str, Any] = dict(match or {})
        if since is not None:
            base["ts"] = {"$gte": as_utc(since)}
        order = [("ts", DESCENDING), ("_id", DESCENDING)]
        if collection not in self._indexed:
            try:  # pages below walk this index; a read-only user may not create it
                self._call("index", lambda: coll.create_index(order))
            except (OperationFailure, StoreAccessDenied) as err:
                logger.debug("no index on %s.ts: %s", collection, err)
            self._indexed.add(collection)
        # one sorted cursor, read `chunk` documents at a time; a failure part-way is a
        # StoreUnavailable (a reader such as the monitor is simply rerun)
        cursor = self._call("scan", lambda: coll.find(base).sort(order).batch_size(chunk))
        try:
            while True:
                docs = list(islice(cursor, chunk))
                if not docs:
                    return
                yield docs
        except PyMongoError as err:
            raise StoreUnavailable(
                f"MongoDB at {redact_uri(self._uri)}: reading {collection} failed part-way "
                f"({_short(err)}); rerun"
            ) from err
        finally:
            cursor.close()

    def try_lock(
        self, name: str, owner: str, lease_seconds: float, info: Mapping[str, Any]
    ) -> tuple[bool, Document | None]:
        coll = self._coll(LOCKS)

        def attempt() -> tuple[bool, Document | None]:
            now = time.time()
            doc = {**info, "_id": name, "owner": owner, "expires_at": now + lease_seconds}
            try:
                coll.insert_one(doc)
                return True, None
            except DuplicateKeyError:
                pass
            held = coll.find_one({"_id": name})
            if held is None:  # released in between: try again on the next call
                return False, None
            if held.get("owner") != owner and held.get("expires_at", 0) > now:
                return False, held
            # take over an expired lease, only if nobody else did first (compare and set)
            taken = coll.update_one(
                {"_id": name, "owner": held.get("owner"), "expires_at": held.get("expires_at")},
                {"$set": {k: v for k, v in doc.items() if k != "_id"}},
            )
            return (taken.modified_count == 1, held)

        return self._call("lock", attempt)

    def renew_lock(self, name: str, owner: str, lease_seconds: float) -> bool:
        coll = self._coll(LOCKS)
        result = self._call(
            "renew lock",
            lambda: coll.update_one(
                {"_id": name, "owner": owner},
                {"$set": {"expires_at": time.time() + lease_seconds}},
            ),
        )
        return bool(result.matched_count)

    def release_lock(self, name: str, owner: str) -> None:
        coll = self._coll(LOCKS)
        self._call("release lock", lambda: coll.delete_one({"_id": name, "owner": owner}))

    def read_lock(self, name: str) -> Document | None:
        coll = self._coll(LOCKS)
        found: Document | None = self._call("read lock", lambda: coll.find_one({"_id": name}))
        return found

    def drop(self, collection: str) -> None:
        self._hash_maps.pop(collection, None)
        coll = self._coll(collection)
        self._call("drop", coll.drop)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._hash_maps.clear()


READ_BATCH = 20_000
"""Documents a columnar read decodes into typed arrays at once."""


def _snapshot_query(
    columns: Sequence[str] | None, require: str | None, id_range: tuple[Any, Any] | None
) -> tuple[dict[str, Any], dict[str, int] | None]:
    """The filter (labelled rows, an `_id` range) and projection of a snapshot read."""
    query: dict[str, Any] = {require: {"$ne": None}} if require else {}
    if id_range is not None:
        lo, hi = id_range
        bounds = {
            **({"$gte": lo} if lo is not None else {}),
            **({"$lt": hi} if hi is not None else {}),
        }
        if bounds:
            query["_id"] = bounds
    projection: dict[str, int] | None = None
    if columns is not None:
        projection = {c: 1 for c in columns}
        projection["_id"] = 1
    return query, projection
