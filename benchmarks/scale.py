"""Scale-out benchmark: the ETL and a 5-fold CV, local engine vs Dask with 1 and 2 workers.

    python benchmarks/scale.py                         # 5,000,000 rows
    python benchmarks/scale.py --rows 500000 --cv-rows 200000

ETL: the CSV into a fresh embedded store per engine (each run in its own process; on
Dask the workers validate and the client, the embedded store's one writer, writes).
CV: the training config's model, 5-fold cross-validation of the training part of the
stored snapshot, through joblib (locally one process; on Dask its backend). Dask runs on
a local cluster of real worker processes, one thread each. Peak memory is each
process's own VmHWM. Prints Markdown; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import peak_mb, run_child  # noqa: E402

from mlcycle.engine import open_engine  # noqa: E402
from mlcycle.spec import load_spec, packaged  # noqa: E402
from mlcycle.store.embedded import EmbeddedStore  # noqa: E402

SPEC = load_spec(packaged("datasets/loan.yaml"))


def etl_child(workers: int, csv: str, target: str) -> dict:
    from mlcycle.etl.distributed import run_etl_dask
    from mlcycle.etl.pipeline import run_etl

    store = EmbeddedStore(Path(target))
    if workers == 0:
        t = time.perf_counter()
        summary = run_etl(SPEC, Path(csv), store)
        return {"seconds": time.perf_counter() - t, "rows": summary.inserted,
                "client_mb": peak_mb(), "worker_mb": []}  # fmt: skip
    with open_engine("dask", None, workers) as engine:
        t = time.perf_counter()
        summary = run_etl_dask(SPEC, Path(csv), store, engine.client)
        seconds = time.perf_counter() - t
        worker_mb = sorted(engine.client.run(peak_mb).values())
    return {"seconds": seconds, "rows": summary.inserted, "client_mb": peak_mb(),
            "worker_mb": worker_mb}  # fmt: skip


def cv_child(workers: int, target: str, rows: int) -> dict:
    from mlcycle.train.config import load_train_config
    from mlcycle.train.fitting import fit
    from mlcycle.train.snapshot import load_snapshot

    store = EmbeddedStore(Path(target))
    snapshot = load_snapshot(store, SPEC)
    if rows and rows < len(snapshot.ids):  # the first `rows` (a frozen snapshot: a copy)
        snapshot = replace(
            snapshot,
            X=snapshot.X.iloc[:rows],
            y=snapshot.y[:rows],
            ids=snapshot.ids[:rows],
            row_hashes=snapshot.row_hashes[:rows],
            positions=snapshot.positions[:rows],
        )
    cfg = load_train_config(packaged("configs/train.yaml"))
    cfg = cfg.model_copy(update={"cv_folds": 5, "search": None})
    with open_engine("dask" if workers else "local", None, max(workers, 1)) as engine:
        t = time.perf_counter()
        cv = fit(snapshot, SPEC, cfg, engine).cv
        seconds = time.perf_counter() - t
        worker_mb = sorted(engine.client.run(peak_mb).values()) if engine.distributed else []
    return {"seconds": seconds, "rows": len(snapshot.y), "auc": cv["cv_roc_auc_mean"],
            "client_mb": peak_mb(), "worker_mb": worker_mb}  # fmt: skip


def _child(*args: str) -> dict:
    return run_child(__file__, *args)


def _mem(r: dict) -> str:
    workers = ", ".join(f"{m:,.0f}" for m in r["worker_mb"])
    return f"{r['client_mb']:,.0f} MB" + (f" + workers {workers} MB" if workers else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--cv-rows", type=int, default=0, help="0: every labelled row")
    parser.add_argument("--csv", help="an existing loan CSV instead of a generated one")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child is not None:
        kind, workers, *rest = args.child
        fn = etl_child if kind == "etl" else cv_child
        result = (
            fn(int(workers), *rest) if kind == "etl" else fn(int(workers), rest[0], int(rest[1]))
        )
        print(json.dumps(result))
        return

    from mlcycle.datagen import write_demo

    work = Path(tempfile.mkdtemp(prefix="mlcycle-scale-"))
    csv = Path(args.csv) if args.csv else write_demo(SPEC, work / "loans.csv", args.rows, seed=1)
    print(f"input: {csv} ({csv.stat().st_size / 1e6:,.0f} MB)", flush=True)
    engines = [("local", 0), ("dask, 1 worker", 1), ("dask, 2 workers", 2)]
    etl_lines = ["| engine | ETL s | rows/s | vs local | peak RSS |", "|---|---:|---:|---:|---|"]
    base = None
    for name, workers in engines:
        r = _child("etl", str(workers), str(csv), str(work / f"etl-{workers}.sqlite3"))
        base = base or r["seconds"]
        etl_lines.append(f"| {name} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
                         f"{base / r['seconds']:.2f}x | {_mem(r)} |")  # fmt: skip
        print(etl_lines[-1], file=sys.stderr, flush=True)
    cv_lines = ["| engine | rows | 5-fold CV s | vs local | CV ROC AUC | peak RSS |",
                "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    base = None
    for name, workers in engines:
        r = _child("cv", str(workers), str(work / "etl-0.sqlite3"), str(args.cv_rows))
        base = base or r["seconds"]
        cv_lines.append(f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | "
                        f"{base / r['seconds']:.2f}x | {r['auc']:.6f} | {_mem(r)} |")  # fmt: skip
        print(cv_lines[-1], file=sys.stderr, flush=True)
    print()
    print("\n".join(etl_lines))
    print()
    print("\n".join(cv_lines))


if __name__ == "__main__":
    from benchmarks.common import record

    record("scale", main)
