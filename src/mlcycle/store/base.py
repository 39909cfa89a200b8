"""The Store protocol: the few operations the stages need, and the backend factory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlcycle.config import Settings

Document = dict[str, Any]

BATCHES = "etl_batches"
LOCKS = "mlcycle_locks"


def quarantine_collection(dataset: str) -> str:
    return f"{dataset}_quarantine"


def predictions_collection(dataset: str) -> str:
    return f"{dataset}_predictions"


def shadow_collection(dataset: str, alias: str) -> str:
    """Predictions of the model scored in shadow under `alias` (same request ids as the
    served model's, in `predictions_collection`; never read by the monitor's window)."""
    return f"{dataset}_predictions_{alias}"


def monitoring_collection(dataset: str) -> str:
    return f"{dataset}_monitoring"


def as_utc(moment: datetime) -> datetime:
    """A timezone-aware UTC datetime (naive ones are taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_datetime(value: Any) -> datetime:
    """A stored `ts` as a UTC datetime: MongoDB gives datetimes, the embedded store
    RFC 3339 text."""
    if isinstance(value, datetime):
        return as_utc(value)
    return as_utc(datetime.fromisoformat(str(value)))


@runtime_checkable
class Store(Protocol):
    """A document store keyed by `_id`.

    Dataset rows carry `_hash` (content hash) and `_batch_id` (the ETL batch that last
    wrote them); `write_rows` inserts new rows and replaces changed ones, so callers can
    skip unchanged rows after `fetch_hashes`.
    """

    name: str

    def ping(self) -> None:
        """Raise StoreUnavailable if the backend cannot be reached."""

    def fetch_hashes(self, dataset: str, ids: Sequence[str]) -> dict[str, str]:
        """Content hashes of the stored rows among `ids`."""

    def fetch_rows(
        self, dataset: str, ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, Document]:
        """The stored rows among `ids`, each with those of `fields` it holds (a field the
        row lacks is left out, a stored null is None)."""

    def write_rows(
        self, dataset: str, new: Sequence[Document], changed: Sequence[Document]
    ) -> None:
        """Insert `new` rows and replace `changed` ones (both keyed by `_id`); idempotent."""

    def read_snapshot(
        self, dataset: str, columns: Sequence[str] | None = None, require: str | None = None
    ) -> pd.DataFrame:
        """All current rows as a DataFrame (only `columns` if given; rows whose `require`
        field is not null if given). Lineage fields `_hash` and `_batch_id` are included."""

    def read_columns(self, dataset: str, schema: pa.Schema, require: str | None = None) -> pa.Table:
        """All current rows as Arrow columns typed by `schema` (`mlcycle.store.columns`),
        read a chunk at a time; rows whose `require` column is null are left out. A
        stored value its column's type cannot take raises StoredValueError naming it."""

    def put(self, collection: str, docs: Sequence[Document]) -> None:
        """Insert or replace documents by `_id` (quarantine entries, batch records)."""

    def append(self, collection: str, docs: Sequence[Document]) -> None:
        """Append log documents (each with a unique `_id`)."""

    def find(
        self, collection: str, match: Mapping[str, Any] | None = None, limit: int = 0
    ) -> list[Document]:
        """Documents whose fields equal `match`, newest inserted last; `limit` 0 = all."""

    def count(self, collection: str, match: Mapping[str, Any] | None = None) -> int:
        """Number of documents (whose fields equal `match`) in a collection (0 if none)."""

    def scan(
        self,
        collection: str,
        match: Mapping[str, Any] | None = None,
        since: datetime | None = None,
        chunk: int = 10_000,
    ) -> Iterator[list[Document]]:
        """Log documents (each with a `ts` datetime) whose fields equal `match` and whose
        `ts` is at or after `since`, newest first, `chunk` at a time: a reader can stop
        early, and memory holds one chunk whatever the log's size. `ts` comes back as
        the backend keeps it: read it with `as_datetime`."""

    def try_lock(
        self, name: str, owner: str, lease_seconds: float, info: Mapping[str, Any]
    ) -> tuple[bool, Document | None]:
        """Take the lease `name` for `owner` when it is free or its holder's lease expired
        (a dead process). Returns (taken, the other holder's document: the live holder
        when not taken, the expired one when taken over, None when it was free)."""

    def renew_lock(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Extend `owner`'s lease; False if it is no longer the holder."""

    def release_lock(self, name: str, owner: str) -> None:
        """Give the lease up (only `owner` can)."""

    def read_lock(self, name: str) -> Document | None:
        """The lease's document, whoever holds it (expired or not)."""

    def drop(self, collection: str) -> None:
        """Remove a collection and its documents."""

    def close(self) -> None:
        """Release connections."""


def open_store(settings: Settings) -> Store:
    """The backend named by settings: MongoDB when MONGO_URI is set, else embedded SQLite."""
    if settings.mongo_uri is not None and settings.mongo_uri.get_secret_value():
        from mlcycle.store.mongo import MongoStore

        return MongoStore(
            settings.mongo_uri.get_secret_value(),
            settings.mongo_db,
            timeout_ms=settings.store_timeout_ms,
            retries=settings.store_retries,
        )
    from mlcycle.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.embedded_store_path)
