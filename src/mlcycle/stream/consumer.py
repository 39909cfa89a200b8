"""`mlcycle stream`: a Kafka topic into the store through the ETL's own steps.

Each micro-batch (up to N messages, or what arrived within T milliseconds) is parsed,
validated with the dataset spec, and written: invalid records to the quarantine (with
their reasons) and to a dead-letter topic (reasons in headers), valid ones upserted
by id. Offsets are committed only after the store write and the dead-letter delivery
succeeded, so delivery is at least once and, as upserts are idempotent, every record
takes effect exactly once. A failed batch (store down, broker gone, commit refused) is
not committed: the consumer seeks back to the batch's first offsets, backs off and
tries again.

Semantics differ from a file in one way, on purpose: a topic is a changelog, so a later
record with the same id *updates* the stored row (last write wins, per partition order;
keys are ids, so one id stays in one partition), where a file rejects a second
occurrence of an id as a duplicate.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

from mlcycle.errors import BadInput, MlcycleError, StoreUnavailable
from mlcycle.etl.extract import RECORD_ERROR, records_absent, records_frame
from mlcycle.etl.pipeline import EtlSummary, new_batch_id
from mlcycle.etl.sources import TopicOrigin
from mlcycle.etl.steps import absence, load_valid, now_ms, quarantine_docs
from mlcycle.rules.frames import validate_chunk
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import BATCHES, Document, Store, quarantine_collection
from mlcycle.stream.kafka import client_config, dlq_topic
from mlcycle.stream.metrics import StreamMetrics

logger = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
"""Seconds between retries of a failed batch; well under librdkafka's
max.poll.interval.ms (5 min), so the consumer keeps its partitions while it waits."""
ASSIGN_WAIT = 60.0
"""With --until-idle, how long to wait for a partition assignment at most."""
RECORD_EVERY = 10.0
"""Seconds between updates of the run's batch record."""


@dataclass
class StreamOptions:
    bootstrap: str
    topic: str
    group: str
    batch: int = 5_000
    batch_ms: int = 500
    max_message_bytes: int = 1024 * 1024
    dead_letter: str | None = None
    """Dead-letter topic; None: `<topic>.dlq`; "" turns it off."""
    until_idle: float | None = None
    """Stop after this many seconds without a message (and nothing left to read)."""
    max_records: int | None = None
    kafka: dict[str, Any] = field(default_factory=dict)
    """Extra client settings (security), merged into both clients' configuration."""


@dataclass
class Batch:
    """One micro-batch of messages, and where it starts in each partition."""

    messages: list[Any]
    first: dict[int, int]
    last: dict[int, int]


BatchHook = Callable[[list[Any], float], None]
"""Called after a batch is stored and committed: (messages, time.time() then)."""


class StreamConsumer:
    """Consumes one topic into one dataset; `run()` returns when stopped."""

    def __init__(
        self,
        spec: DatasetSpec,
        store: Store,
        options: StreamOptions,
        *,
        metrics: StreamMetrics | None = None,
        on_batch: BatchHook | None = None,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.spec = spec
        self.store = store
        self.opts = options
        self.metrics = metrics or StreamMetrics()
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self.summary = EtlSummary(
            batch_id=new_batch_id(),
            dataset=spec.name,
            store=store.name,
            spec_hash=spec.fingerprint,
            started_at=now_ms(),
        )
        self.partitions: dict[int, dict[str, int]] = {}
        self.dlq = dlq_topic(options.topic) if options.dead_letter is None else options.dead_letter
        self._recorded = 0.0
        self._errors_logged: dict[str, float] = {}
        base = client_config(options.bootstrap, options.kafka)
        self.consumer = Consumer(
            {
                **base,
                "group.id": options.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "statistics.interval.ms": 5000,
                "stats_cb": self.metrics.on_stats,
                "error_cb": self._on_error,
            }
        )
        self.producer = (
            Producer(
                {
                    **base,
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.max.bytes": max(1_000_000, options.max_message_bytes + 65_536),
                    "error_cb": self._on_error,
                }
            )
            if self.dlq
            else None
        )

    # -- control ---------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Finish the batch in hand, commit it, and return from `run()`."""
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _on_error(self, err: Any) -> None:
        # librdkafka reports transient broker trouble here and recovers by itself: each
        # kind of error is logged once a minute at most
        self.metrics.client_errors.inc()
        now = time.monotonic()
        code = str(err.code()) if hasattr(err, "code") else str(err)
        if now - self._errors_logged.get(code, -1e9) >= 60:
            self._errors_logged[code] = now
            logger.warning("kafka: %s", err.str() if hasattr(err, "str") else err)

    # -- the loop ----------------------------------------------------------------------

    def _topic_exists(self) -> bool | None:
        """Whether the broker knows the topic (None: the broker did not answer in time)."""
        from confluent_kafka import KafkaException

        try:
            meta = self.consumer.list_topics(self.opts.topic, timeout=ASSIGN_WAIT)
        except KafkaException:
            return None
        found = meta.topics.get(self.opts.topic)
        return found is not None and found.error is None

    def run(self) -> EtlSummary:
        o = self.opts
        if self._topic_exists() is False:
            if o.until_idle is not None:  # a run meant to drain: nothing to drain is an error
                self.consumer.close()
                raise BadInput(
                    f"topic {o.topic!r} does not exist on the broker: create it (or publish "
                    "to it) first, or check --topic"
                )
            logger.warning("topic %r does not exist yet: waiting for it", o.topic)
        self.consumer.subscribe([o.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        logger.info(
            "streaming topic %r (group %r) into %s/%s; dead letters: %s",
            o.topic,
            o.group,
            self.store.name,
            self.spec.name,
            self.dlq or "off",
        )
        idle_since = time.monotonic()
        started = idle_since
        backoff = BACKOFF_START
        try:
            while not self.stop_event.is_set():
                want = o.batch
                if o.max_records is not None:
                    want = min(want, o.max_records - self.summary.rows_read)
                    if want <= 0:
                        break
                self.metrics.polled()
                raw = self.consumer.consume(num_messages=want, timeout=o.batch_ms / 1000)
                batch = self._batch(raw)
                if batch is None:
                    now = time.monotonic()
                    if not self.metrics.has_assignment():
                        # the first group join takes seconds: idleness counts from then
                        idle_since = now
                    if o.until_idle is not None and (
                        now - idle_since >= o.until_idle
                        or (
                            now - started >= max(o.until_idle, ASSIGN_WAIT)
                            and not self.metrics.has_assignment()
                        )
                    ):
                        logger.info("no message for %.1f s: stopping", o.until_idle)
                        break
                    self._maybe_record()
                    continue
                idle_since = time.monotonic()
                try:
                    self._process(batch)
                except (StoreUnavailable, _KafkaFailure) as err:
                    self.metrics.failed_batches.inc()
                    logger.warning(
                        "batch of %d message(s) not committed (%s); retrying in %.1f s",
                        len(batch.messages),
                        err,
                        backoff,
                    )
                    self._rewind(batch)
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_START
                self._maybe_record()
            self.summary.status = "succeeded"
        except BaseException as err:
            self.summary.status = "failed"
            self.summary.error = (
                str(err) if isinstance(err, MlcycleError) else f"{type(err).__name__}: {err}"
            )
            raise
        finally:
            self._close()
        return self.summary

    def _batch(self, raw: Iterable[Any]) -> Batch | None:
        messages = []
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for msg in raw:
            err = msg.error()
            if err is not None:
                # partition EOF or a transient fetch error: not a record
                logger.debug("kafka: %s", err)
                continue
            messages.append(msg)
            p, off = msg.partition(), msg.offset()
            first.setdefault(p, off)
            last[p] = off
        return Batch(messages, first, last) if messages else None

    def _process(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        started = time.perf_counter()
        msgs = batch.messages
        frame, absent, partitions, offsets, keys = self._frame(msgs)
        origin = TopicOrigin(self.opts.topic, partitions, offsets, keys)
        result = validate_chunk(frame, self.spec)
        quarantine = quarantine_docs(frame, result.issues, origin, self.summary.batch_id)
        if quarantine:
            self.store.put(quarantine_collection(self.spec.name), quarantine)
        # a changelog: the records of an id are applied in offset order, field by field
        # (a record without a field leaves the stored value as it is)
        counts = load_valid(
            self.store, self.spec, result.valid, origin, self.summary.batch_id, absent
        )
        if quarantine and self.producer is not None:
            self._dead_letter(msgs, quarantine)
        try:
            self.consumer.commit(
                offsets=[
                    TopicPartition(self.opts.topic, p, off + 1) for p, off in batch.last.items()
                ],
                asynchronous=False,
            )
        except KafkaException as err:
            raise _KafkaFailure(f"offset commit failed: {err}") from err
        done = time.time()
        s = self.summary
        s.rows_read += len(msgs)
        s.valid += len(result.valid)
        s.rejected += len(quarantine)
        s.quarantined += len(quarantine)
        s.dropped += result.dropped
        s.inserted += counts.inserted
        s.updated += counts.updated
        s.unchanged += counts.unchanged
        for p, off in batch.last.items():
            seen = self.partitions.setdefault(p, {"first_offset": batch.first[p], "records": 0})
            seen["last_offset"] = off
        for p, n in Counter(partitions).items():
            self.partitions[p]["records"] += n
        self.metrics.batch_done(
            records=len(msgs),
            stored=counts.inserted + counts.updated,
            unchanged=counts.unchanged,
            rejected=len(quarantine),
            seconds=time.perf_counter() - started,
            timestamps=[m.timestamp()[1] for m in msgs],
            now=done,
        )
        if self.on_batch is not None:
            self.on_batch(msgs, done)

    def _frame(
        self, msgs: list[Any]
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[int], list[int], list[Any]]:
        """Raw string values of a batch; a message that is not one JSON object becomes
        a record error (so the row is quarantined with that reason)."""
        limit = self.opts.max_message_bytes
        partitions = [m.partition() for m in msgs]
        offsets = [m.offset() for m in msgs]
        keys = [
            k.decode("utf-8", "replace")[:256] if (k := m.key()) is not None else None for m in msgs
        ]
        records: list[object] = []
        errors: dict[int, str] = {}
        # one decode per message: joining a batch into one JSON array would be faster, but
        # crafted messages could then shift values from one offset to another
        for i, msg in enumerate(msgs):
            record, problem = _parse_one(msg.value(), limit)
            if problem:
                errors[i] = problem
                records.append({})
                continue
            if not isinstance(record, dict):
                kind = "null" if record is None else "a JSON " + type(record).__name__
                errors[i] = f"the message is {kind}, not an object"
                records.append({})
                continue
            if not record:
                errors[i] = "an empty object"
            records.append(record)
        frame = records_frame(records, self.spec, 1)
        if errors:
            column = pd.Series(pd.NA, index=frame.index, dtype="string")
            for i, text in errors.items():
                column.iat[i] = text
            frame[RECORD_ERROR] = column
        absent = absence(frame, records_absent(records, self.spec), self.spec)
        return frame, absent, partitions, offsets, keys

    def _dead_letter(self, msgs: list[Any], quarantine: list[Document]) -> None:
        """Each rejected message, as it came, with the reasons in headers; waits for
        delivery (a dead letter must not be lost by the commit that follows)."""
        assert self.producer is not None
        by_id = {doc["_id"]: doc for doc in quarantine}
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        cap = self.opts.max_message_bytes
        for msg in msgs:
            doc = by_id.get(f"kafka:{msg.topic()}:{msg.partition()}:{msg.offset()}")
            if doc is None:
                continue
            value = msg.value()
            headers = dead_letter_headers(doc, msg, self.spec.name, self.summary.batch_id)
            if value is not None and len(value) > cap:
                headers.append(("mlcycle.truncated_from", str(len(value)).encode()))
                value = value[:cap]
            self._produce(msg.key(), value, headers, delivered)
        remaining = self.producer.flush(30)
        if remaining or failures:
            raise _KafkaFailure(
                f"dead-letter delivery to {self.dlq!r} failed: "
                f"{failures[0] if failures else f'{remaining} message(s) undelivered'}"
            )
        self.metrics.dead_letters.inc(len(by_id))

    def _produce(self, key: Any, value: Any, headers: list[Any], callback: Any) -> None:
        assert self.producer is not None
        while True:
            try:
                self.producer.produce(
                    self.dlq, value=value, key=key, headers=headers, on_delivery=callback
                )
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)

    def _rewind(self, batch: Batch) -> None:
        """Seek back to the batch's first offsets, so its messages come again."""
        from confluent_kafka import KafkaException, TopicPartition

        for p, off in batch.first.items():
            try:
                self.consumer.seek(TopicPartition(self.opts.topic, p, off))
            except KafkaException as err:
                # the partition was revoked meanwhile: its new owner starts from the
                # last committed offset, which is before this batch
                logger.info("seek partition %d: %s", p, err)

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        logger.info("assigned partitions %s", [tp.partition for tp in partitions])
        self.metrics.assigned(tp.partition for tp in partitions)

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        logger.info("revoked partitions %s", [tp.partition for tp in partitions])
        self.metrics.revoked(tp.partition for tp in partitions)

    # -- lineage -----------------------------------------------------------------------

    def _maybe_record(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._recorded < RECORD_EVERY:
            return
        if not force and not self.summary.rows_read:
            return
        self._recorded = time.monotonic()
        s = self.summary
        s.finished_at = now_ms()
        s.seconds = round((s.finished_at - s.started_at).total_seconds(), 3) if s.started_at else 0
        doc = s.to_dict()
        doc.pop("files", None)
        doc.update(
            {
                "_id": s.batch_id,
                "source": "kafka",
                "topic": self.opts.topic,
                "group": self.opts.group,
                "partitions": {str(p): v for p, v in sorted(self.partitions.items())},
                "spec_version": self.spec.version,
            }
        )
        try:
            self.store.put(BATCHES, [doc])
        except MlcycleError as err:
            logger.warning("could not record stream batch %s: %s", s.batch_id, err)

    def _close(self) -> None:
        self._maybe_record(force=True)
        try:
            self.consumer.close()  # leaves the group at once: partitions move without delay
        except Exception as err:  # closing must not hide why the loop ended
            logger.warning("closing the consumer: %s", err)
        if self.producer is not None:
            self.producer.flush(10)


def _parse_one(value: bytes | None, limit: int) -> tuple[object, str | None]:
    if value is None:
        return None, "an empty message (null value); deletes are not applied"
    if len(value) > limit:
        return None, f"a message of {len(value):,} bytes, over the {limit:,}-byte limit"
    try:
        return orjson.loads(value), None
    except orjson.JSONDecodeError as err:
        return None, f"not valid JSON ({err})"


class _KafkaFailure(Exception):
    """The broker refused a commit or a dead letter: the batch is retried."""


def dead_letter_headers(doc: Document, msg: Any, dataset: str, batch_id: str) -> list[Any]:
    """Why a record was rejected and where it came from, as message headers: ours, and
    the names Kafka Connect's dead-letter queue uses, for tools that read those."""
    errors = doc.get("errors") or []
    reasons = "; ".join(f"{e['column']}: {e['reason']}" for e in errors)[:4000]
    first = errors[0] if errors else {"column": "", "reason": ""}
    pairs = {
        "mlcycle.dataset": dataset,
        "mlcycle.batch_id": batch_id,
        "mlcycle.error.column": str(first["column"]),
        "mlcycle.error.reason": str(first["reason"])[:4000],
        "mlcycle.error.reasons": reasons,
        "mlcycle.error.count": str(len(errors)),
        "__connect.errors.topic": msg.topic(),
        "__connect.errors.partition": str(msg.partition()),
        "__connect.errors.offset": str(msg.offset()),
        "__connect.errors.exception.message": reasons,
    }
    return [(k, v.encode("utf-8", "replace")) for k, v in pairs.items()]


__all__ = ["StreamConsumer", "StreamOptions", "dead_letter_headers"]
