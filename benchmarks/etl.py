"""ETL benchmark: rows/s, peak RSS, and how the ETL compares to raw inserts and to the
naive one-upsert-per-row approach, on the embedded store and on FerretDB.

    python benchmarks/etl.py                    # 1,000,000 rows, both stores
    python benchmarks/etl.py --rows 100000 --stores embedded

Each measurement runs in its own process so peak RSS is that run's alone. Prints a
Markdown table; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.servers (the FerretDB launcher); not the package

from benchmarks.common import peak_mb  # noqa: E402

from mlcycle.etl.extract import read_file  # noqa: E402
from mlcycle.etl.pipeline import run_etl  # noqa: E402
from mlcycle.etl.transform import to_documents  # noqa: E402
from mlcycle.rules.frames import validate_chunk  # noqa: E402
from mlcycle.spec import load_spec, packaged  # noqa: E402
from mlcycle.store.embedded import EmbeddedStore  # noqa: E402
from mlcycle.store.mongo import MongoStore  # noqa: E402

SPEC = load_spec(packaged("datasets/loan.yaml"))


def _open(kind: str, target: str) -> EmbeddedStore | MongoStore:
    if kind == "embedded":
        return EmbeddedStore(Path(target))
    return MongoStore(target, "bench", timeout_ms=600_000, retries=1)


def _documents(csv: Path, limit: int | None = None) -> list[dict]:
    docs: list[dict] = []
    for chunk in read_file(csv, SPEC, 100_000):
        docs.extend(to_documents(validate_chunk(chunk.frame, SPEC).valid, SPEC.id_column, "raw"))
        if limit and len(docs) >= limit:
            return docs[:limit]
    return docs


def child(mode: str, kind: str, target: str, csv: Path, rows: int) -> dict:
    """One measurement in this process; prints its result as JSON."""
    store = _open(kind, target)
    if mode == "etl":
        t = time.perf_counter()
        summary = run_etl(SPEC, csv, store)
        seconds = time.perf_counter() - t
        return {
            "seconds": seconds,
            "inserted": summary.inserted,
            "unchanged": summary.unchanged,
            "peak_mb": peak_mb(),
        }
    docs = _documents(csv, rows if mode == "naive" else None)
    if mode == "raw":
        t = time.perf_counter()
        if isinstance(store, EmbeddedStore):
            conn = sqlite3.connect(target)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, hash TEXT, doc BLOB)")
            with conn:
                conn.executemany(
                    "INSERT INTO raw VALUES (?, ?, ?)",
                    [(d["_id"], d["_hash"], orjson.dumps(d)) for d in docs],
                )
        else:
            coll = store.db["raw"]
            for start in range(0, len(docs), 10_000):
                coll.insert_many(docs[start : start + 10_000], ordered=False)
        return {"seconds": time.perf_counter() - t, "rows": len(docs)}
    # naive: one upsert per row, each its own round trip / transaction
    t = time.perf_counter()
    if isinstance(store, EmbeddedStore):
        conn = sqlite3.connect(target, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE naive (id TEXT PRIMARY KEY, hash TEXT, doc BLOB)")
        for d in docs:
            conn.execute(
                "INSERT INTO naive VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc",
                (d["_id"], d["_hash"], orjson.dumps(d)),
            )
    else:
        coll = store.db["naive"]
        for d in docs:
            coll.update_one({"_id": d["_id"]}, {"$set": d}, upsert=True)
    return {"seconds": time.perf_counter() - t, "rows": len(docs)}


def _run_child(mode: str, kind: str, target: str, csv: Path, rows: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--store",
            kind,
            "--target",
            target,
            "--csv",
            str(csv),
            "--rows",
            str(rows),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument("--stores", default="embedded,ferretdb")
    parser.add_argument("--child")
    parser.add_argument("--store")
    parser.add_argument("--target")
    parser.add_argument("--csv")
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.store, args.target, Path(args.csv), args.rows)))
        return

    from mlcycle.datagen import write_demo

    work = Path(tempfile.mkdtemp(prefix="mlcycle-bench-"))
    csv = write_demo(SPEC, work / "loans.csv", args.rows, seed=1)
    print(f"input: {args.rows:,} rows, {csv.stat().st_size / 1e6:.0f} MB CSV ({csv})", flush=True)
    lines = [
        "| store | ETL rows/s | ETL s | rerun s | peak RSS | raw insert s | ETL / raw | "
        "naive upsert rows/s | ETL speed-up vs naive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in args.stores.split(","):
        server = None
        if kind == "embedded":
            targets = [str(work / f"{name}.sqlite3") for name in ("etl", "raw", "naive")]
        else:
            from tests.servers import start_ferretdb

            server = start_ferretdb(work / "ferretdb")
            targets = [server.uri] * 3
        try:
            etl = _run_child(
                "etl", "embedded" if kind == "embedded" else "mongo", targets[0], csv, args.rows
            )
            rerun = _run_child(
                "etl", "embedded" if kind == "embedded" else "mongo", targets[0], csv, args.rows
            )
            raw = _run_child(
                "raw", "embedded" if kind == "embedded" else "mongo", targets[1], csv, args.rows
            )
            naive = _run_child(
                "naive",
                "embedded" if kind == "embedded" else "mongo",
                targets[2],
                csv,
                args.naive_rows,
            )
        finally:
            if server is not None:
                server.stop()
        etl_rate = args.rows / etl["seconds"]
        naive_rate = naive["rows"] / naive["seconds"]
        lines.append(
            f"| {kind} | {etl_rate:,.0f} | {etl['seconds']:.1f} | {rerun['seconds']:.1f} "
            f"(0 written: {rerun['unchanged']:,} unchanged) | {etl['peak_mb']:.0f} MB | "
            f"{raw['seconds']:.1f} | {etl['seconds'] / raw['seconds']:.2f}x | "
            f"{naive_rate:,.0f} ({naive['rows']:,} rows) | {etl_rate / naive_rate:,.0f}x |"
        )
        print(lines[-1], file=sys.stderr, flush=True)  # progress; the table follows
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    from benchmarks.common import record

    record("etl", main)
