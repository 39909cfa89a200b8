"""Distributed boosting benchmark: `mlcycle train` with model kind `lightgbm`, on the local
engine vs a real `dask scheduler` + `dask worker` processes (LightGBM's Dask interface).

    python benchmarks/boost.py                                   # 1,000,000 rows, both stores
    python benchmarks/boost.py --rows 5000000 --stores embedded

Each store is loaded once by the ETL; each engine then trains in its own process, with a
fresh MLflow store (the whole stage: read, fit, ONNX export and parity, judging,
registration). Locally that is 5-fold CV and the fit in one process; on Dask the workers
read their `_id` ranges (MongoDB; the embedded store is read by the client and sent),
LightGBM trains across them, and the client holds the hold-out and a sample. Peak memory
is each process's own VmHWM (client, and each worker). Prints Markdown; nothing here is
asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.servers: the FerretDB launcher

from benchmarks.common import peak_mb, run_child  # noqa: E402

from mlcycle.spec import load_spec, packaged  # noqa: E402

SPEC = load_spec(packaged("datasets/loan.yaml"))
PARAMS = {"n_estimators": 100, "num_leaves": 31}


def _store(kind: str, where: str):  # type: ignore[no-untyped-def]
    from mlcycle.store.embedded import EmbeddedStore
    from mlcycle.store.mongo import MongoStore

    if kind == "embedded":
        return EmbeddedStore(Path(where))
    return MongoStore(where, "boostbench", timeout_ms=600_000, retries=1)


def train_child(engine_kind: str, store_kind: str, where: str, scheduler: str, work: str) -> dict:
    from mlcycle.config import get_settings
    from mlcycle.engine import LOCAL, Engine
    from mlcycle.train.config import ModelConfig, load_train_config
    from mlcycle.train.train import run_train

    cfg = load_train_config(packaged("configs/train.yaml"))
    model = ModelConfig.model_validate({"kind": "lightgbm", "params": PARAMS})
    cfg = cfg.model_copy(update={"model": model, "search": None})
    settings = get_settings().model_copy(
        update={"data_dir": Path(work) / "data", "mongo_uri": None, "mlflow_tracking_uri": None}
    )
    store = _store(store_kind, where)
    worker_mb: list[float] = []
    worker_base: list[float] = []
    client_base = peak_mb()  # the libraries loaded, no rows read yet
    t = time.perf_counter()
    if engine_kind == "local":
        result = run_train(settings, SPEC, cfg, store, LOCAL, again=True)
    else:
        from distributed import Client

        with Client(scheduler, timeout="60s") as client:
            worker_base = sorted(client.run(_vmhwm_mb).values())
            result = run_train(settings, SPEC, cfg, store, Engine("dask", client), again=True)
            seconds = time.perf_counter() - t
            worker_mb = sorted(client.run(_vmhwm_mb).values())
    if engine_kind == "local":
        seconds = time.perf_counter() - t
    store.close()
    return {
        "seconds": seconds,
        "rows": result.rows,
        "auc": result.metrics["roc_auc"],
        "accuracy": result.metrics["accuracy"],
        "eval_rows": (result.evaluation or {}).get("set", {}).get("rows"),
        "client_mb": peak_mb(),
        "client_base_mb": client_base,
        "worker_mb": worker_mb,
        "worker_base_mb": worker_base,
    }


def _vmhwm_mb() -> float:
    """A worker's peak RSS in MB (defined here: pickled by value, as the workers cannot
    import the benchmarks package)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _child(*args: str) -> dict:
    return run_child(__file__, *args)


def _row(store: str, rows: int, engine: str, r: dict, base: float) -> str:
    workers = " + ".join(f"{m:,.0f}" for m in r["worker_mb"]) or "-"
    return (
        f"| {store} | {rows:,} | {engine} | {r['seconds']:.1f} | {base / r['seconds']:.2f}x "
        f"| {r['client_mb']:,.0f} | {workers} | {r['auc']:.4f} | {r['accuracy']:.4f} "
        f"| {r['eval_rows']:,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--ferretdb-rows", type=int, default=200_000,
        help="rows for FerretDB (1.x scans the whole table for each `_id` range)",
    )  # fmt: skip
    parser.add_argument("--stores", default="embedded,ferretdb")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(train_child(*args.child)))
        return

    from mlcycle.datagen import write_demo
    from mlcycle.etl.pipeline import run_etl

    work = Path(tempfile.mkdtemp(prefix="mlcycle-boost-"))
    print(f"model kind lightgbm {PARAMS}, `train` end to end; dask: a `dask scheduler` and "
          f"{args.workers} `dask worker` processes of one thread; peak RSS in MB")  # fmt: skip
    print()
    print("| store | rows | engine | train s | vs local | client peak MB | worker peaks MB "
          "| ROC AUC | accuracy | hold-out rows |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---|---:|---:|---:|")
    estimates: list[tuple[str, dict]] = []
    for kind in args.stores.split(","):
        server = None
        root = work / kind
        root.mkdir()
        if kind == "embedded":
            where = str(root / "store.sqlite3")
        else:
            from tests.servers import start_ferretdb

            server = start_ferretdb(root / "ferretdb")
            where = server.uri
        try:
            store = _store("embedded" if kind == "embedded" else "mongodb", where)
            rows = args.rows if kind == "embedded" else args.ferretdb_rows
            run_etl(SPEC, write_demo(SPEC, root / "loans.csv", rows, seed=3), store)
            store.close()
            store_kind = "embedded" if kind == "embedded" else "mongodb"
            local = _child("local", store_kind, where, "", str(root / "local"))
            print(_row(kind, rows, "local", local, local["seconds"]), flush=True)
            # (FerretDB 1.x scans the whole table for each `_id` range: long reads)
            env = {**os.environ, "MONGO_URI": where if kind != "embedded" else "",
                   "MLCYCLE_STORE_TIMEOUT_MS": "600000"}  # fmt: skip
            from tests.servers import DaskCluster

            cluster = DaskCluster(root, env, args.workers).start()
            try:
                remote = _child("dask", store_kind, where, cluster.address, str(root / "dask"))
            finally:
                cluster.stop()
            engine = f"dask, {args.workers} workers"
            print(_row(kind, rows, engine, remote, local["seconds"]), flush=True)
            estimates.append((kind, remote))
        finally:
            if server is not None:
                server.stop()
    estimate(args.workers, estimates)


def estimate(workers: int, found: list[tuple[str, dict]]) -> None:
    """100,000,000 rows on N workers, scaled linearly from the dask run: each worker's
    memory a row it holds, the client's a row it holds (the hold-out, at most about
    `holdout_max_rows`, and the sample), and worker-seconds a row."""
    from mlcycle.train.cluster import SAMPLE_ROWS
    from mlcycle.train.config import TrainConfig
    from mlcycle.train.holdout import capped_fraction

    big, bound = 100_000_000, TrainConfig().holdout_max_rows
    for kind, r in found:
        rows, held = r["rows"], r["eval_rows"]
        per_worker_row = (max(r["worker_mb"]) - max(r["worker_base_mb"])) / (rows / workers)
        # the embedded store is read by the client (every row, then sent to the workers)
        here = r["rows"] if kind == "embedded" else held + SAMPLE_ROWS
        per_client_row = (r["client_mb"] - r["client_base_mb"]) / here
        share = capped_fraction(held / rows, bound, big)
        print()
        print(f"Estimate for {big:,} rows ({kind} run, scaled linearly; hold-out share "
              f"{share:g} there, as holdout_max_rows {bound:,} makes it): a worker holds "
              f"{per_worker_row * 1e3:,.2f} MB per 1,000 rows, the client "
              f"{per_client_row * 1e3:,.2f} MB per 1,000 rows it holds ("
              + ("every row: the embedded store is read by the client"
                 if kind == "embedded" else "the hold-out and the sample, bounded")
              + f"), {r['seconds'] * workers / rows * 1e6:,.1f} worker-seconds per "
              "1,000,000 rows.")  # fmt: skip
        print()
        print("| workers | rows a worker | worker peak GB | client peak GB | train s |")
        print("|---:|---:|---:|---:|---:|")
        for n in (8, 32, 128):
            worker_gb = (max(r["worker_base_mb"]) + per_worker_row * big / n) / 1024
            held_big = big if kind == "embedded" else share * big + SAMPLE_ROWS
            client_gb = (r["client_base_mb"] + per_client_row * held_big) / 1024
            seconds = r["seconds"] * workers / rows * big / n
            print(f"| {n} | {big // n:,} | {worker_gb:,.1f} | {client_gb:,.1f} | {seconds:,.0f} |")


if __name__ == "__main__":
    from benchmarks.common import record

    record("boost", main)
