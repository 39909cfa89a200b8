"""Streaming benchmark on a real Kafka broker: drain a backlog, compare with the batch ETL,
and the publish-to-stored latency at a steady rate.

    python benchmarks/stream.py                          # 1,000,000 records, both stores
    python benchmarks/stream.py --rows 100000 --stores embedded --repeat 3

For each store, in one run (so the ratio compares like with like): the batch ETL of the
CSV, then `mlcycle stream`'s consumer draining the same records from a topic (published
beforehand: a backlog). Each runs in its own process (peak RSS is its own). Then, into
the embedded store, records published at a steady rate while the consumer runs: the
latency from each record's Kafka timestamp to the commit of its batch. Prints Markdown;
nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.servers (the Kafka and FerretDB launchers)

from benchmarks.common import peak_mb  # noqa: E402

from mlcycle.etl.pipeline import run_etl  # noqa: E402
from mlcycle.spec import load_spec, packaged  # noqa: E402
from mlcycle.store.embedded import EmbeddedStore  # noqa: E402
from mlcycle.store.mongo import MongoStore  # noqa: E402
from mlcycle.stream.consumer import StreamConsumer, StreamOptions  # noqa: E402
from mlcycle.stream.publish import publish  # noqa: E402

SPEC = load_spec(packaged("datasets/loan.yaml"))


def _open(target: str) -> EmbeddedStore | MongoStore:
    if target.startswith("mongodb://"):
        return MongoStore(target, f"bench{int(time.time() * 1000)}", timeout_ms=600_000, retries=1)
    return EmbeddedStore(Path(target))


def child(mode: str, target: str, csv: str, bootstrap: str, topic: str) -> dict:
    store = _open(target)
    if mode == "etl":
        t = time.perf_counter()
        summary = run_etl(SPEC, Path(csv), store)
        return {"seconds": time.perf_counter() - t, "rows": summary.inserted, "peak_mb": peak_mb()}
    marks: list[float] = []
    options = StreamOptions(bootstrap, topic, f"bench-{time.time_ns()}", until_idle=3)
    consumer = StreamConsumer(SPEC, store, options, on_batch=lambda _m, now: marks.append(now))
    t = time.time()
    summary = consumer.run()
    # the drain: from the start of the consumer (the group join included) to the commit
    # of the last batch; the rate: from the partitions' assignment
    joined = consumer.metrics.assigned_at or t
    return {
        "seconds": marks[-1] - t,
        "busy": marks[-1] - joined,
        "rows": summary.inserted,
        "peak_mb": peak_mb(),
    }


def _run_child(mode: str, target: str, csv: Path, bootstrap: str, topic: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--target", target, "--csv", str(csv),
         "--bootstrap", bootstrap, "--topic", topic],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def latency(bootstrap: str, work: Path, rate: int, seconds: int, batch_ms: int) -> dict:
    """Records published at `rate`/s for `seconds` while the consumer runs."""
    from mlcycle.datagen import write_demo

    csv = write_demo(SPEC, work / f"steady-{time.time_ns()}.csv", rate * seconds, seed=7)
    topic = f"steady-{time.time_ns()}"
    from mlcycle.stream.publish import ensure_topic

    ensure_topic(bootstrap, topic, 1, {})
    store = EmbeddedStore(work / f"steady-{time.time_ns()}.sqlite3")
    waits: list[float] = []

    def on_batch(msgs: list, now: float) -> None:
        waits.extend(now - m.timestamp()[1] / 1000 for m in msgs)

    options = StreamOptions(bootstrap, topic, f"g-{topic}", batch_ms=batch_ms, until_idle=5)
    consumer = StreamConsumer(SPEC, store, options, on_batch=on_batch)
    runner = threading.Thread(target=consumer.run)
    runner.start()
    while not consumer.metrics.has_assignment():
        time.sleep(0.1)
    publish(csv, topic, SPEC.id_column, bootstrap, rate=rate)
    runner.join()
    waits.sort()
    q = statistics.quantiles(waits, n=100)
    return {"records": len(waits), "p50": q[49], "p95": q[94], "p99": q[98], "max": waits[-1]}


def _spread(values: list[float]) -> str:
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:,.0f}"
    return f"{mid:,.0f} [{min(values):,.0f}–{max(values):,.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", default="embedded,ferretdb")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--steady-seconds", type=int, default=60)
    parser.add_argument("--child")
    parser.add_argument("--target")
    parser.add_argument("--csv")
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.target, args.csv, args.bootstrap, args.topic)
        print(json.dumps(result))
        return

    from tests.servers import KafkaBroker, start_ferretdb

    from mlcycle.datagen import write_demo

    work = Path(tempfile.mkdtemp(prefix="mlcycle-stream-bench-"))
    broker = KafkaBroker(work / "kafka").start()
    try:
        csv = write_demo(SPEC, work / "loans.csv", args.rows, seed=1)
        print(f"input: {args.rows:,} rows, {csv.stat().st_size / 1e6:.0f} MB CSV", flush=True)
        topic = "backlog"
        sent = publish(csv, topic, SPEC.id_column, broker.bootstrap, partitions=3)
        print(f"published {sent.records:,} records in {sent.seconds:.1f} s "
              f"({sent.records / sent.seconds:,.0f}/s)", flush=True)  # fmt: skip
        lines = [
            "| store | batch ETL rows/s | stream records/s | stream / ETL | drain 1 backlog s "
            "| ETL peak RSS | stream peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind in args.stores.split(","):
            server = start_ferretdb(work / "ferretdb") if kind == "ferretdb" else None
            etl_rates, stream_rates, drains, ratios = [], [], [], []
            etl_peak = stream_peak = 0.0
            try:
                for n in range(args.repeat):
                    target = server.uri if server else str(work / f"{kind}-{n}")
                    e = _run_child(
                        "etl", target if server else target + "-etl.sqlite3", csv,
                        broker.bootstrap, topic,
                    )  # fmt: skip
                    s = _run_child(
                        "stream", target if server else target + "-stream.sqlite3", csv,
                        broker.bootstrap, topic,
                    )  # fmt: skip
                    assert e["rows"] == s["rows"] == args.rows, (e, s)
                    etl_rates.append(args.rows / e["seconds"])
                    stream_rates.append(args.rows / s["busy"])
                    ratios.append(stream_rates[-1] / etl_rates[-1])
                    drains.append(s["seconds"])
                    etl_peak, stream_peak = (
                        max(etl_peak, e["peak_mb"]),
                        max(stream_peak, s["peak_mb"]),
                    )
                    print(f"  {kind} run {n + 1}: etl {etl_rates[-1]:,.0f}/s, "
                          f"stream {stream_rates[-1]:,.0f}/s", flush=True)  # fmt: skip
            finally:
                if server is not None:
                    server.stop()
            lines.append(
                f"| {kind} | {_spread(etl_rates)} | {_spread(stream_rates)} | "
                f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}] | "
                f"{statistics.median(drains):.1f} [{min(drains):.1f}–{max(drains):.1f}] | "
                f"{etl_peak:.0f} MB | {stream_peak:.0f} MB |"
            )
            print(lines[-1], file=sys.stderr, flush=True)  # progress; the table follows
        lat = {
            ms: latency(broker.bootstrap, work, args.rate, args.steady_seconds, ms)
            for ms in (500, 100)
        }
    finally:
        broker.stop()
    print()
    print("\n".join(lines))
    print()
    print(f"steady {args.rate:,} records/s for {args.steady_seconds} s into the embedded store, "
          "publish-to-stored latency:")  # fmt: skip
    print("| --batch-ms | records | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for ms, q in lat.items():
        print(f"| {ms}{' (default)' if ms == 500 else ''} | {q['records']:,} | "
              f"{q['p50'] * 1000:.0f} | {q['p95'] * 1000:.0f} | {q['p99'] * 1000:.0f} | "
              f"{q['max'] * 1000:.0f} |")  # fmt: skip


if __name__ == "__main__":
    from benchmarks.common import record

    record("stream", main)
