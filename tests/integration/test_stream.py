"""Streaming ingestion against a real Kafka broker (KRaft, from the official jars).

The store ends up as the batch ETL leaves it for the same file, through a consumer
killed with SIGKILL, a broker restart, poison messages and a store outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mlcycle.datagen import write_demo
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store, quarantine_collection
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.mongo import MongoStore
from mlcycle.stream.consumer import StreamConsumer, StreamOptions
from mlcycle.stream.http import serve_health
from mlcycle.stream.metrics import StreamMetrics
from mlcycle.stream.publish import publish
from tests.data import SPEC_PATH
from tests.integration.test_etl_pipeline import HEADER
from tests.servers import (
    FerretDB,
    KafkaBroker,
    ferretdb_binary,
    free_port,
    mlcycle,
    wait_for,
)

pytestmark = pytest.mark.integration

BAD_ROWS = [
    "LP910002,Male,Yes,1,Graduate,No,4583,1508,abc,360,1,Rural,N",  # bad number
    "LP910003,Robot,Yes,0,Graduate,Yes,3000,0,66,360,1,Urban,Y",  # unknown category
    ",Male,Yes,0,Not Graduate,No,2583,2358,120,360,1,Urban,Y",  # missing id
    "LP910007,Male,Yes,2,Graduate,No,-1e9,0,100,360,0,Semiurban,N",  # negative income
]
GOOD_ROWS = [
    "LP910001,Male,Yes,0,Graduate,No,5849,0,,360,1,Urban,Y",  # missing LoanAmount
    '"LP910006","Female","No","3+","Not Graduate","No","2333","1516","95","360","1","Urban","Y"',
    "LP910008,male,yes,3,graduate,no,3036,2504,158,360,0,semiurban,n",  # case/alias fixes
]


def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def mixed_file(spec: DatasetSpec, folder: Path, rows: int) -> Path:
    """Synthetic rows plus rows every rule rejects (no id occurs twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_demo(spec, folder / "mixed.csv", rows, seed=11)
    with path.open("a", encoding="utf-8", newline="") as fh:
        for line in [*GOOD_ROWS, *BAD_ROWS]:
            fh.write(line + "\n")
    assert path.read_text().splitlines()[0] == HEADER
    return path


def contents(store: Store, dataset: str) -> dict[str, dict[str, Any]]:
    """Every stored row by id, without the run-specific lineage fields."""
    return {
        d["_id"]: {k: v for k, v in d.items() if k not in ("_batch_id", "_source")}
        for d in store.find(dataset)
    }


def quarantine(store: Store, dataset: str) -> dict[str, list[tuple[str, str]]]:
    """Quarantined records by their raw id, with (column, reason) of every failure."""
    out = {}
    for q in store.find(quarantine_collection(dataset)):
        key = str(q["record"].get("Loan_ID"))
        out[key] = sorted((e["column"], e["reason"]) for e in q["errors"])
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = probe.committed([TopicPartition(topic, p) for p in range(partitions)], 20)
    finally:
        probe.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def stream_env(tmp_path: Path, bootstrap: str, mongo_uri: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "MLCYCLE_DATA_DIR": str(tmp_path / "data"),
        "MLCYCLE_SPEC": str(SPEC_PATH),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MLCYCLE_STREAM_HTTP_PORT": str(free_port()),  # /metrics: what the tests wait on
    }
    for var in ("MONGO_URI", "MLCYCLE_MONGO_URI"):
        env.pop(var, None)
    if mongo_uri:
        env.update(
            MONGO_URI=mongo_uri,
            MLCYCLE_MONGO_DB="streamed",
            MLCYCLE_STORE_TIMEOUT_MS="500",
            MLCYCLE_STORE_RETRIES="1",
        )
    return env


def start_stream(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlcycle.cli", "stream", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"stream exited {proc.returncode}: {err[-3000:]}"
    return out


def stop_when(proc: subprocess.Popen[str], done: Any, what: str, timeout: float = 180) -> str:
    """Wait until `done()` (everything stored and committed), then stop the consumer as
    an operator does (SIGTERM: it finishes its batch, commits and exits 0)."""
    wait_for(done, timeout, what)
    proc.send_signal(signal.SIGTERM)
    return finish(proc, 60)


def metric(env: dict[str, str], name: str) -> float:
    """A counter of the consumer's /metrics (0 before it serves or counts)."""
    url = f"http://127.0.0.1:{env['MLCYCLE_STREAM_HTTP_PORT']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


@pytest.fixture
def embedded_at(tmp_path: Path) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(tmp_path / "data" / "store.sqlite3")
    yield store
    store.close()


def test_a_published_file_is_stored_as_the_batch_etl_stores_it(
    spec: DatasetSpec, store: Store, kafka: KafkaBroker, tmp_path: Path
) -> None:
    path = mixed_file(spec, tmp_path / "raw", 3000)
    topic = topic_name()
    sent = publish(path, topic, spec.id_column, kafka.bootstrap, partitions=3)
    assert sent.records == 3000 + len(GOOD_ROWS) + len(BAD_ROWS)

    options = StreamOptions(kafka.bootstrap, topic, f"g-{topic}", batch=700, until_idle=3)
    summary = StreamConsumer(spec, store, options).run()
    assert (summary.rows_read, summary.rejected) == (sent.records, len(BAD_ROWS))
    assert summary.inserted == 3000 + len(GOOD_ROWS)

    reference = EmbeddedStore(tmp_path / "reference.sqlite3")
    run_etl(spec, path, reference, max_rejected_share=0.5)
    assert contents(store, spec.name) == contents(reference, spec.name)
    assert quarantine(store, spec.name) == quarantine(reference, spec.name)
    (q,) = [
        q
        for q in store.find(quarantine_collection(spec.name))
        if q["record"]["Loan_ID"] == "LP910002"
    ]
    assert q["topic"] == topic and q["_id"] == f"kafka:{topic}:{q['partition']}:{q['offset']}"
    doc = store.find(spec.name, {"_id": "LP910001"})[0]
    assert doc["_source"].startswith(f"kafka:{topic}:") and doc["_batch_id"] == summary.batch_id

    # consuming the same records again (a new group) changes nothing
    again = StreamConsumer(
        spec, store, StreamOptions(kafka.bootstrap, topic, f"g2-{topic}", until_idle=3)
    ).run()
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, summary.inserted)
    assert store.count(quarantine_collection(spec.name)) == len(BAD_ROWS)


def test_poison_messages_are_dead_lettered_and_the_consumer_keeps_going(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path
) -> None:
    topic = topic_name()
    good = {
        "Loan_ID": "LP920001",
        "Gender": "Male",
        "Married": "Yes",
        "Dependents": "0",
        "Education": "Graduate",
        "Self_Employed": "No",
        "ApplicantIncome": 5000,
        "CoapplicantIncome": 0,
        "LoanAmount": 120,
        "Loan_Amount_Term": 360,
        "Credit_History": 1,
        "Property_Area": "Urban",
        "Loan_Status": "Y",
    }
    poison = {
        "not-json": b"{this is not json",
        "huge": b'{"Loan_ID": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        "types": orjson.dumps({**good, "Loan_ID": "LP920002", "ApplicantIncome": "lots"}),
        "array": b"[1, 2, 3]",
        "nested": orjson.dumps({**good, "Loan_ID": "LP920003", "Gender": {"a": 1}}),
    }
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "message.max.bytes": 10_000_000})
    producer.produce(topic, key=b"first", value=orjson.dumps(good))
    for name, value in poison.items():
        producer.produce(topic, key=name.encode(), value=value)
    producer.produce(topic, key=b"null", value=None)
    producer.produce(topic, key=b"last", value=orjson.dumps({**good, "Loan_ID": "LP920009"}))
    assert producer.flush(30) == 0

    store = EmbeddedStore(tmp_path / "s.sqlite3")
    options = StreamOptions(kafka.bootstrap, topic, f"g-{topic}", until_idle=3)
    summary = StreamConsumer(spec, store, options).run()
    assert (summary.rows_read, summary.rejected) == (8, 6)
    assert sorted(d["_id"] for d in store.find(spec.name)) == ["LP920001", "LP920009"]

    reasons = {q["key"]: q["reason"] for q in store.find(quarantine_collection(spec.name))}
    assert "not valid JSON" in reasons["not-json"]
    assert "over the 1,048,576-byte limit" in reasons["huge"]
    assert "not a number" in reasons["types"]
    assert "not an object" in reasons["array"]
    assert "null value" in reasons["null"]
    assert set(reasons) == {*poison, "null"}

    dead = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"dlq-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    dead.subscribe([f"{topic}.dlq"])
    letters: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while len(letters) < 6 and time.monotonic() < deadline:
        msg = dead.poll(1)
        if msg is not None and not msg.error():
            letters[msg.key().decode()] = msg
    dead.close()
    assert set(letters) == set(reasons)
    headers = dict(letters["types"].headers())
    assert headers["mlcycle.error.column"] == b"ApplicantIncome"
    assert b"not a number" in headers["mlcycle.error.reason"]
    assert headers["__connect.errors.topic"] == topic.encode()
    assert letters["not-json"].value() == poison["not-json"]  # as it came
    huge = letters["huge"]
    assert len(huge.value()) == 1024 * 1024
    assert dict(huge.headers())["mlcycle.truncated_from"] == str(len(poison["huge"])).encode()


def test_kill_9_mid_stream_then_restart_stores_every_record_once(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path, embedded_at: EmbeddedStore
) -> None:
    path = mixed_file(spec, tmp_path / "raw", 60_000)
    topic = topic_name()
    total = publish(path, topic, spec.id_column, kafka.bootstrap, partitions=2).records
    env = stream_env(tmp_path, kafka.bootstrap)
    args = ("--topic", topic, "--batch", "500", "--batch-ms", "50")
    first = start_stream(env, tmp_path, *args)
    wait_for(lambda: embedded_at.count(spec.name) > 10_000, 120, "the first rows")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    stored_then = embedded_at.count(spec.name)
    assert stored_then < 60_000 + len(GOOD_ROWS), "killed before the end"

    group = f"mlcycle-stream-{spec.name}"
    stop_when(
        start_stream(env, tmp_path, *args),
        lambda: committed(kafka.bootstrap, group, topic, 2) == total,
        "every record committed",
    )
    reference = EmbeddedStore(tmp_path / "reference.sqlite3")
    run_etl(spec, path, reference, max_rejected_share=0.5)
    assert contents(embedded_at, spec.name) == contents(reference, spec.name)
    assert quarantine(embedded_at, spec.name) == quarantine(reference, spec.name)
    assert committed(kafka.bootstrap, f"mlcycle-stream-{spec.name}", topic, 2) == total


def test_sigterm_finishes_the_batch_commits_and_exits_0(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path, embedded_at: EmbeddedStore
) -> None:
    path = write_demo(spec, tmp_path / "raw" / "a.csv", 40_000, seed=3)
    topic = topic_name()
    publish(path, topic, spec.id_column, kafka.bootstrap)
    env = stream_env(tmp_path, kafka.bootstrap)
    proc = start_stream(env, tmp_path, "--topic", topic, "--batch", "1000", "--json")
    wait_for(lambda: embedded_at.count(spec.name) > 2_000, 120, "the first rows")
    proc.send_signal(signal.SIGTERM)
    summary = orjson.loads(finish(proc, 30))
    assert summary["status"] == "succeeded"
    stored = embedded_at.count(spec.name)
    assert summary["inserted"] == stored
    assert committed(kafka.bootstrap, f"mlcycle-stream-{spec.name}", topic, 1) == stored


def test_a_broker_restart_during_consumption_loses_nothing(
    spec: DatasetSpec, tmp_path: Path, embedded_at: EmbeddedStore
) -> None:
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        path = write_demo(spec, tmp_path / "raw" / "a.csv", 50_000, seed=4)
        topic = topic_name()
        publish(path, topic, spec.id_column, broker.bootstrap, partitions=2)
        env = stream_env(tmp_path, broker.bootstrap)
        proc = start_stream(env, tmp_path, "--topic", topic, "--batch", "500", "--batch-ms", "50")
        wait_for(lambda: embedded_at.count(spec.name) > 5_000, 120, "the first rows")
        broker.stop()  # returns once the broker process has exited
        broker.start()
        more = write_demo(spec, tmp_path / "raw2" / "b.csv", 2_000, seed=99)
        publish(more, topic, spec.id_column, broker.bootstrap)
        group = f"mlcycle-stream-{spec.name}"
        stop_when(
            proc,
            lambda: committed(broker.bootstrap, group, topic, 2) == 52_000,
            "every record committed",
        )
        assert embedded_at.count(spec.name) == 52_000
        assert committed(broker.bootstrap, f"mlcycle-stream-{spec.name}", topic, 2) == 52_000
    finally:
        broker.stop()


def test_a_broker_back_at_another_bootstrap_address_is_found_again(
    spec: DatasetSpec, tmp_path: Path, embedded_at: EmbeddedStore
) -> None:
    """The broker comes back at another address of `bootstrap.servers` (a pod
    rescheduled with a new address behind a list of them): the consumer finds it there
    and loses nothing."""
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        moved = free_port()
        path = write_demo(spec, tmp_path / "raw" / "a.csv", 20_000, seed=6)
        topic = topic_name()
        publish(path, topic, spec.id_column, broker.bootstrap, partitions=2)
        env = stream_env(tmp_path, f"{broker.bootstrap},127.0.0.1:{moved}")
        proc = start_stream(env, tmp_path, "--topic", topic, "--batch", "500")
        wait_for(lambda: embedded_at.count(spec.name) == 20_000, 120, "the first file")
        broker.stop()
        broker.start(port=moved)
        more = write_demo(spec, tmp_path / "raw2" / "b.csv", 2_000, seed=98)
        publish(more, topic, spec.id_column, broker.bootstrap)
        group = f"mlcycle-stream-{spec.name}"
        stop_when(
            proc,
            lambda: committed(broker.bootstrap, group, topic, 2) == 22_000,
            "every record committed",
        )
        assert embedded_at.count(spec.name) == 22_000
        assert committed(broker.bootstrap, f"mlcycle-stream-{spec.name}", topic, 2) == 22_000
    finally:
        broker.stop()


def test_with_the_store_down_nothing_is_committed_and_the_consumer_resumes(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path
) -> None:
    # FerretDB upserts a few hundred rows a second here: enough rows for several
    # batches on each side of the outage, few enough to finish on a loaded machine
    rows = 8_000
    binary = ferretdb_binary()
    assert binary is not None, "FerretDB is not built: run `scripts/ferretdb.sh build`"
    server = FerretDB(binary, tmp_path / "ferret").start()
    try:
        path = write_demo(spec, tmp_path / "raw" / "a.csv", rows, seed=5)
        topic = topic_name()
        publish(path, topic, spec.id_column, kafka.bootstrap)
        env = stream_env(tmp_path, kafka.bootstrap, server.uri)
        group = f"mlcycle-stream-{spec.name}"
        proc = start_stream(env, tmp_path, "--topic", topic, "--batch", "500")
        mongo = MongoStore(server.uri, "streamed", timeout_ms=2000, retries=2)
        wait_for(lambda: mongo.count(spec.name) > 1_500, 120, "the first rows")
        mongo.close()
        server.stop()

        def failed() -> float:
            return metric(env, "mlcycle_stream_failed_batches_total")

        wait_for(lambda: failed() >= 1, 60, "a batch to fail on the store")
        before, tries = committed(kafka.bootstrap, group, topic, 1), failed()
        wait_for(lambda: failed() >= tries + 2, 60, "two more tries")
        assert committed(kafka.bootstrap, group, topic, 1) == before < rows
        assert proc.poll() is None, "the consumer waits for the store"
        server.start()
        stop_when(
            proc, lambda: committed(kafka.bootstrap, group, topic, 1) == rows, "every record", 300
        )
        mongo = MongoStore(server.uri, "streamed", timeout_ms=2000, retries=2)
        assert mongo.count(spec.name) == rows
        assert committed(kafka.bootstrap, group, topic, 1) == rows
        mongo.close()
    finally:
        server.stop()


def test_health_and_metrics_while_streaming(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path
) -> None:
    path = write_demo(spec, tmp_path / "raw" / "a.csv", 5_000, seed=6)
    topic = topic_name()
    publish(path, topic, spec.id_column, kafka.bootstrap)
    metrics = StreamMetrics()
    server = serve_health(metrics, "127.0.0.1", free_port())
    base = f"http://127.0.0.1:{server.server_address[1]}"
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    consumer = StreamConsumer(
        spec,
        store,
        StreamOptions(kafka.bootstrap, topic, f"g-{topic}", batch=1000, until_idle=6),
        metrics=metrics,
    )
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        wait_for(lambda: store.count(spec.name) == 5_000, 60, "all rows")
        with urllib.request.urlopen(base + "/health", timeout=5) as resp:
            health = orjson.loads(resp.read())
        assert resp.status == 200 and health["assigned_partitions"] == [0]

        def scrape() -> str:
            with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
                return str(resp.read().decode())

        # the client's statistics (lag) come every 5 s
        wait_for(lambda: 'mlcycle_stream_consumer_lag{partition="0"} 0.0' in scrape(), 30, "lag")
        text = scrape()
        assert 'mlcycle_stream_records_total{outcome="stored"} 5000.0' in text
        assert 'mlcycle_stream_consumer_lag{partition="0"} 0.0' in text
        assert "mlcycle_stream_latency_seconds_count 5000.0" in text
    finally:
        runner.join(60)
        server.shutdown()


def test_cli_publish_and_stream_round_trip(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path, embedded_at: EmbeddedStore
) -> None:
    path = mixed_file(spec, tmp_path / "raw", 500)
    topic = topic_name()
    env = stream_env(tmp_path, kafka.bootstrap)
    sent = mlcycle(env, tmp_path, "publish", str(path), "--topic", topic, "--json")
    assert sent.returncode == 0, sent.stderr
    assert orjson.loads(sent.stdout)["records"] == 507
    got = mlcycle(env, tmp_path, "stream", "--topic", topic, "--until-idle", "3", "--json")
    assert got.returncode == 0, got.stderr
    summary = orjson.loads(got.stdout)
    assert (summary["rows_read"], summary["rejected"], summary["inserted"]) == (507, 4, 503)
    batch = embedded_at.find("etl_batches", {"_id": summary["batch_id"]})[0]
    assert batch["source"] == "kafka" and batch["partitions"]["0"]["last_offset"] == 506

    missing = mlcycle(env, tmp_path, "publish", str(tmp_path / "nope.csv"), "--topic", topic)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_topic_that_does_not_exist_is_an_error_not_an_empty_success(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    env = stream_env(tmp_path, kafka.bootstrap)
    topic = topic_name()
    got = mlcycle(env, tmp_path, "stream", "--topic", topic, "--until-idle", "2")
    assert got.returncode == 2, got.stderr
    assert f"topic {topic!r} does not exist" in got.stderr
    assert "Traceback" not in got.stderr


def test_a_second_consumer_on_a_taken_port_says_which_flag_to_use(
    spec: DatasetSpec, kafka: KafkaBroker, tmp_path: Path
) -> None:
    import socket

    path = write_demo(spec, tmp_path / "raw" / "a.csv", 50, seed=8)
    topic = topic_name()
    publish(path, topic, spec.id_column, kafka.bootstrap)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        env = {**stream_env(tmp_path, kafka.bootstrap), "MLCYCLE_STREAM_HTTP_PORT": port}
        got = mlcycle(env, tmp_path, "stream", "--topic", topic, "--until-idle", "2")
    finally:
        taken.close()
    assert got.returncode == 2, got.stderr
    assert f"port {port} on 127.0.0.1 is taken" in got.stderr and "--http-port" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
