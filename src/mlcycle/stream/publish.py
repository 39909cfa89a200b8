"""`mlcycle publish`: a file's records onto a topic, one JSON object a message, keyed by id.

Records go as they are in the file: CSV rows as objects of strings (empty cells as ""),
JSON and Parquet values with their JSON types, JSONL lines byte for byte (a line that
is not JSON reaches the topic, and so the quarantine, as it was). Memory stays bounded:
files are read a block at a time (a JSON array, one document, is the exception).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlcycle.errors import MlcycleError, StructuralError
from mlcycle.etl.extract import SUPPORTED_SUFFIXES, discover, json_records
from mlcycle.stream.kafka import client_config

logger = logging.getLogger(__name__)


@dataclass
class PublishSummary:
    topic: str
    files: list[str]
    records: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "files": self.files,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records / self.seconds) if self.seconds else None,
        }


def _key(record: object, id_column: str) -> bytes | None:
    if isinstance(record, dict):
        value = record.get(id_column)
        if value is not None and not isinstance(value, dict | list):
            return str(value).encode("utf-8", "replace")
    return None


def _csv_records(path: Path, id_column: str) -> Iterator[tuple[bytes | None, bytes]]:
    csv.field_size_limit(2**31 - 1)
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise StructuralError(f"{path}: empty file (no header line)")
            for row in reader:
                if not row:
                    continue
                record = dict(zip(header, row, strict=False))
                yield _key(record, id_column), orjson.dumps(record)
    except UnicodeDecodeError as err:
        raise StructuralError(f"{path}: not UTF-8 text ({err.reason})") from err


def _jsonl_records(path: Path, id_column: str) -> Iterator[tuple[bytes | None, bytes]]:
    with path.open("rb") as fh:
        for n, raw in enumerate(fh):
            line = raw[3:] if n == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                key = _key(orjson.loads(line), id_column)
            except orjson.JSONDecodeError:
                key = None
            yield key, line


def _json_records(path: Path, id_column: str) -> Iterator[tuple[bytes | None, bytes]]:
    for record in json_records(path):
        yield _key(record, id_column), orjson.dumps(record)


def _parquet_records(path: Path, id_column: str) -> Iterator[tuple[bytes | None, bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=50_000):
            for record in batch.to_pylist():
                yield _key(record, id_column), orjson.dumps(record, default=str)
    except (pa.ArrowInvalid, OSError) as err:
        raise StructuralError(f"{path}: not a readable Parquet file: {err}") from err


def file_records(path: Path, id_column: str) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of every record of one file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_records(path, id_column)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(path, id_column)
    if suffix == ".json":
        return _json_records(path, id_column)
    if suffix in (".parquet", ".pq"):
        return _parquet_records(path, id_column)
    raise StructuralError(
        f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def ensure_topic(bootstrap: str, topic: str, partitions: int, extra: dict[str, Any]) -> bool:
    """Create the topic if it does not exist; True if it was created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap, extra))
    try:
        meta = admin.list_topics(timeout=15)
    except KafkaException as err:
        raise MlcycleError(f"Kafka at {bootstrap} is not reachable: {err}") from err
    if topic in meta.topics and not meta.topics[topic].error:
        return False
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    try:
        futures[topic].result(30)
    except KafkaException as err:
        if "TOPIC_ALREADY_EXISTS" not in str(err):
            raise MlcycleError(f"cannot create topic {topic!r}: {err}") from err
        return False
    logger.info("created topic %r with %d partition(s)", topic, partitions)
    return True


def publish(
    source: Path,
    topic: str,
    id_column: str,
    bootstrap: str,
    *,
    extra: dict[str, Any] | None = None,
    partitions: int = 1,
    rate: float | None = None,
    stamp: bool = False,
) -> PublishSummary:
    """Send every record of the file(s) at `source` to `topic`; waits for delivery.

    `rate` (records/s) paces the sends; `stamp` adds a `published_at` header (ns)."""
    from confluent_kafka import KafkaException, Producer

    files = discover(source)
    extra = extra or {}
    ensure_topic(bootstrap, topic, partitions, extra)
    producer = Producer(
        {
            **client_config(bootstrap, extra),
            "enable.idempotence": True,  # a retried send is not a second record
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            "message.max.bytes": 10 * 1024 * 1024,
        }
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None and len(failures) < 10:
            failures.append(str(err))

    summary = PublishSummary(topic, [str(f) for f in files])
    started = time.perf_counter()
    for path in files:
        for key, value in file_records(path, id_column):
            if rate:
                wait = started + summary.records / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            headers: list[tuple[str, str | bytes | None]] | None = (
                [("published_at", str(time.time_ns()).encode())] if stamp else None
            )
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, headers=headers, on_delivery=delivered
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as err:
                    raise MlcycleError(f"{path}: cannot publish to {topic!r}: {err}") from err
            summary.records += 1
            if summary.records % 1000 == 0:
                producer.poll(0)
                if failures:
                    break
    remaining = producer.flush(120)
    summary.seconds = time.perf_counter() - started
    if failures or remaining:
        raise MlcycleError(
            f"publishing to {topic!r} at {bootstrap} failed: "
            f"{failures[0] if failures else f'{remaining} record(s) not delivered'}"
        )
    return summary


__all__ = ["PublishSummary", "ensure_topic", "file_records", "publish"]
