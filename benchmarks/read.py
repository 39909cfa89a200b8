"""Reading the training snapshot: rows/s from each store backend into a DataFrame.

    python benchmarks/read.py --rows 1000000 --stores embedded,ferretdb

Loads a synthetic loan table with the ETL (untimed), then times `read_snapshot` with the
training stage's columns and label filter, three times each, and prints the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.servers: the FerretDB launcher

from mlcycle.datagen import write_demo  # noqa: E402
from mlcycle.etl.pipeline import run_etl  # noqa: E402
from mlcycle.spec import load_spec, packaged  # noqa: E402
from mlcycle.store.base import Store  # noqa: E402
from mlcycle.store.embedded import EmbeddedStore  # noqa: E402
from mlcycle.store.mongo import MongoStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", default="embedded,ferretdb")
    args = parser.parse_args()
    spec = load_spec(packaged("datasets/loan.yaml"))
    assert spec.target is not None
    work = Path(tempfile.mkdtemp(prefix="mlcycle-read-bench-"))
    csv = write_demo(spec, work / "loans.csv", args.rows, seed=5)
    columns = [spec.id_column, *spec.feature_columns, spec.target.column, "_hash", "_batch_id"]
    print("| store | rows | read s (median of 3) | rows/s |")
    print("|---|---|---|---|")
    for kind in args.stores.split(","):
        server = None
        store: Store
        if kind == "embedded":
            store = EmbeddedStore(work / "read.sqlite3")
        else:
            from tests.servers import start_ferretdb

            server = start_ferretdb(work / "ferretdb")
            store = MongoStore(server.uri, "readbench", timeout_ms=600_000, retries=1)
        try:
            run_etl(spec, csv, store)
            times = []
            for _ in range(3):
                t = time.perf_counter()
                frame = store.read_snapshot(spec.name, columns=columns, require=spec.target.column)
                times.append(time.perf_counter() - t)
            assert len(frame) == args.rows
            median = statistics.median(times)
            print(
                f"| {kind} | {args.rows:,} | {median:.2f} | {args.rows / median:,.0f} |", flush=True
            )
        finally:
            store.close()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    from benchmarks.common import record

    record("read", main)
