"""Monitoring benchmark: `mlcycle monitor` over a window of 1,000,000 logged predictions.

    python benchmarks/monitor.py                       # 1,000,000 predictions, embedded store
    python benchmarks/monitor.py --rows 200000 --batch 10 --mongo mongodb://127.0.0.1:27018/

A model is trained on demo rows (embedded tracking), then the prediction log is filled
with documents exactly as the API writes them (`--batch` rows per request; 1, the
default, is the worst case: one document per prediction). Each monitor run is the real
CLI in its own process, so the peak RSS printed is that run's alone. Prints a Markdown
table; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlcycle.datagen import generate, write_demo  # noqa: E402
from mlcycle.etl.pipeline import run_etl  # noqa: E402
from mlcycle.spec import load_spec, packaged  # noqa: E402
from mlcycle.store.base import Store, predictions_collection  # noqa: E402
from mlcycle.store.embedded import EmbeddedStore  # noqa: E402
from mlcycle.store.mongo import MongoStore  # noqa: E402
from mlcycle.train.config import load_train_config  # noqa: E402
from mlcycle.train.features import model_frame  # noqa: E402

SPEC = load_spec(packaged("datasets/loan.yaml"))


def fill_log(store: Store, rows: int, batch: int, version: str) -> float:
    """Log `rows` predictions in requests of `batch` rows; returns seconds taken."""
    started = time.perf_counter()
    chunk = 100_000
    now = datetime.now(UTC)
    for offset in range(0, rows, chunk):
        n = min(chunk, rows - offset)
        X = model_frame(generate(SPEC, n, seed=1000 + offset // chunk), SPEC)
        columns = {
            c: [None if v != v else v for v in X[c].tolist()]  # NaN -> null, as the API logs
            for c in SPEC.feature_columns
        }
        rng = np.random.default_rng(offset)
        probs = np.round(rng.beta(5, 2, n), 6).tolist()
        labels = ["Y" if p > 0.5 else "N" for p in probs]
        docs = []
        for start in range(0, n, batch):
            end = min(start + batch, n)
            docs.append(
                {
                    "_id": uuid.uuid4().hex,
                    "request_id": uuid.uuid4().hex,
                    "ts": now - timedelta(milliseconds=(rows - offset - start)),
                    "model_name": SPEC.registered_model,
                    "model_version": version,
                    "latency_ms": 1.0,
                    "rows": end - start,
                    "ids": [f"B{offset + i:09d}" for i in range(start, end)],
                    "features": {c: v[start:end] for c, v in columns.items()},
                    "labels": labels[start:end],
                    "probabilities": probs[start:end],
                }
            )
        for start in range(0, len(docs), 10_000):
            store.append(predictions_collection(SPEC.name), docs[start : start + 10_000])
    return time.perf_counter() - started


def run_once(env: dict[str, str], cwd: Path, rows: int) -> tuple[float, float, dict]:
    """One `mlcycle monitor --last rows --json` in its own process: (s, peak MB, report)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", "monitor", "--last", str(rows), "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if out.returncode not in (0, 3, 4):
        raise SystemExit(out.stderr[-3000:])
    # ru_maxrss of children is the largest child so far: fine, every run does the same work
    return seconds, max(peak, before) / 1024, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1, help="rows per logged request")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mongo", help="also measure on this MongoDB URI (e.g. FerretDB)")
    args = parser.parse_args()

    from mlcycle.config import get_settings
    from mlcycle.train.train import run_train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base_env = {
            **os.environ,
            "MLCYCLE_DATA_DIR": str(root / "data"),
            "MLFLOW_TRACKING_URI": "",
            "MONGO_URI": "",
            "MLCYCLE_LOG_LEVEL": "WARNING",
        }
        os.environ.update(
            {k: v for k, v in base_env.items() if k.startswith(("MLCYCLE", "MLFLOW", "MONGO"))}
        )
        get_settings.cache_clear()
        settings = get_settings()
        store = EmbeddedStore(settings.embedded_store_path)
        run_etl(SPEC, write_demo(SPEC, root / "raw", 2000, seed=3), store)
        version = run_train(
            settings, SPEC, load_train_config(packaged("configs/train.yaml")), store
        ).version
        targets: list[tuple[str, Store, dict[str, str]]] = [("embedded", store, base_env)]
        if args.mongo:
            db = f"bench{uuid.uuid4().hex[:8]}"
            mongo = MongoStore(args.mongo, db, timeout_ms=600_000, retries=1)
            targets.append(
                ("mongodb", mongo, {**base_env, "MONGO_URI": args.mongo, "MLCYCLE_MONGO_DB": db})
            )
        print(
            f"\n{args.rows:,} logged predictions, {args.batch} per request "
            f"({-(-args.rows // args.batch):,} log documents); {args.repeat} runs each\n"
        )
        print(
            "| store | fill log (s) | `mlcycle monitor` (s), median [min–max] "
            "| of which monitoring (s) | predictions/s | peak RSS (MB) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, target, env in targets:
            fill = fill_log(target, args.rows, args.batch, version)
            runs = [run_once(env, root, args.rows) for _ in range(args.repeat)]
            times = [r[0] for r in runs]
            inner = statistics.median(r[2]["seconds"] for r in runs)
            report = runs[-1][2]
            assert report["window"]["rows"] == args.rows, report["window"]
            median = statistics.median(times)
            print(
                f"| {name} | {fill:.1f} | {median:.2f} [{min(times):.2f}–{max(times):.2f}] | "
                f"{inner:.2f} | {args.rows / inner:,.0f} | {max(r[1] for r in runs):,.0f} |"
            )
            target.close()


if __name__ == "__main__":
    from benchmarks.common import record

    record("monitor", main)
