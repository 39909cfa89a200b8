"""Reading the training snapshot, and training's peak memory, as the table grows.

    python benchmarks/read.py --rows 1000000,5000000 --stores embedded --train 1000000
    python benchmarks/read.py --rows 200000 --stores ferretdb

Loads a synthetic loan table with the ETL (untimed), then, in a fresh process each time
(so a figure is that process's own peak), reads it the way training does: "columns" is
the stored columns typed by the spec (`Store.read_columns`), "snapshot" all training
reads (`load_snapshot`: the columns, then sorted by id, labels mapped, the model's frame,
ids, row hashes and hold-out positions). Prints rows/s (median and min-max of `--runs`)
and the peak memory per row above the process's size before the read. `--train` also runs `mlcycle train` on the table once and gives
its peak memory and hold-out metrics (on the sizes `--train` names).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.servers: the FerretDB launcher

PROBE = """
import json, sys, time
from pathlib import Path
from benchmarks.common import peak_mb
from mlcycle.spec import load_spec, packaged
from mlcycle.store.columns import schema_for
from mlcycle.train.snapshot import load_snapshot
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.mongo import MongoStore
spec = load_spec(packaged("datasets/loan.yaml"))
kind, where, mode = sys.argv[1], sys.argv[2], sys.argv[3]
store = EmbeddedStore(Path(where)) if kind == "embedded" else MongoStore(where, "readbench", timeout_ms=600_000, retries=1)
store.ping() if kind != "embedded" else None
before = peak_mb()
t = time.perf_counter()
if mode == "columns":
    names = [spec.id_column, *spec.feature_columns, spec.target.column, "_hash", "_batch_id"]
    rows = store.read_columns(spec.name, schema_for(spec, names), spec.target.column).num_rows
else:
    rows = len(load_snapshot(store, spec).ids)
seconds = time.perf_counter() - t
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak_mb(), "before_mb": before}))
"""


def _probe(kind: str, where: str, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kind, where, mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _train(root: Path) -> dict[str, object]:
    """`mlcycle train --json` on the embedded store under `root`, with its peak RSS."""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "mlcycle.cli", "train", "--json"],
        cwd=root,
        env={**os.environ, "MLCYCLE_DATA_DIR": str(root / "data"), "MLCYCLE_LOG_LEVEL": "WARNING"},
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)
    return {"peak_mb": int(out.stderr.strip().splitlines()[-1]) / 1024, **result["metrics"]}


def main() -> None:
    from mlcycle.datagen import write_demo
    from mlcycle.etl.pipeline import run_etl
    from mlcycle.spec import load_spec, packaged
    from mlcycle.store.base import Store
    from mlcycle.store.embedded import EmbeddedStore
    from mlcycle.store.mongo import MongoStore

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1000000,5000000")
    parser.add_argument("--stores", default="embedded")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train", default="", help="sizes (of --rows) to run `mlcycle train` on")
    args = parser.parse_args()
    spec = load_spec(packaged("datasets/loan.yaml"))
    work = Path(tempfile.mkdtemp(prefix="mlcycle-read-bench-"))
    print(
        f"the snapshot read as training reads it: median (min-max) of {args.runs} fresh processes"
    )
    print()
    print(
        "| store | rows | columns: rows/s | columns: peak bytes a row "
        "| snapshot: rows/s | snapshot: peak bytes a row |"
    )
    print("|---|---|---|---|---|---|")
    trained = []
    for rows in (int(r) for r in args.rows.split(",")):
        csv = write_demo(spec, work / f"loans-{rows}.csv", rows, seed=5)
        for kind in args.stores.split(","):
            server = None
            store: Store
            root = work / f"{kind}-{rows}"
            if kind == "embedded":
                where = str(root / "data" / "store.sqlite3")
                store = EmbeddedStore(Path(where))
            else:
                from tests.servers import start_ferretdb

                server = start_ferretdb(root / "ferretdb")
                where = server.uri
                store = MongoStore(where, "readbench", timeout_ms=600_000, retries=1)
            try:
                run_etl(spec, csv, store)
                store.close()
                cells = []
                for mode in ("columns", "snapshot"):
                    runs = [_probe(kind, where, mode) for _ in range(args.runs)]
                    assert all(r["rows"] == rows for r in runs)
                    rates = sorted(rows / r["seconds"] for r in runs)
                    per_row = statistics.median(
                        (r["peak_mb"] - r["before_mb"]) * 2**20 / rows for r in runs
                    )
                    cells += [
                        f"{statistics.median(rates):,.0f} ({rates[0]:,.0f}-{rates[-1]:,.0f})",
                        f"{per_row:,.0f}",
                    ]
                print(f"| {kind} | {rows:,} | " + " | ".join(cells) + " |", flush=True)
                if str(rows) in args.train.split(",") and kind == "embedded":
                    trained.append((rows, _train(root)))
            finally:
                if server is not None:
                    server.stop()
        csv.unlink()
    if trained:
        print()
        print("`mlcycle train` on the embedded store (logistic regression, the packaged config):")
        print()
        print("| rows | peak memory | hold-out accuracy | hold-out ROC AUC |")
        print("|---|---|---|---|")
        for rows, result in trained:
            print(
                f"| {rows:,} | {result['peak_mb']:,.0f} MB | {result['accuracy']:.6f} "
                f"| {result['roc_auc']:.6f} |"
            )


if __name__ == "__main__":
    from benchmarks.common import record

    record("read", main)
