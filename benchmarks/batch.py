"""Batch scoring and explanations: `mlcycle predict` end to end on a Parquet file (rows
per second, Parquet to Parquet), and what `?explain=true` costs over a plain request for
each model kind.

    python benchmarks/batch.py [--rows 1000000] [--runs 3] [--workers 2]

Trains each model kind with its default params on 2,000 synthetic loan rows in a
temporary embedded project, writes ROWS synthetic applicants to Parquet and scores them
with the logistic regression's `mlcycle predict --json` RUNS times (the command's own
timer: reading, validating, scoring and writing; min, median, max); then the same rows as
a folder of one Parquet file a worker, scored locally and with `--engine dask` on a real
`dask scheduler` + WORKERS `dask worker` processes of one thread (in the same run, one
after the other). Explanations are
timed in-process on the server's own code path (`PredictService.handle`, no network):
one record, and a 10,000-row columnar batch, each with and without `explain`, in one
run (exact terms for the linear model, exact TreeSHAP for the tree ensembles); for the
ensembles, the served explainer against shap's own TreeExplainer on the same 1,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.servers: the Dask cluster launcher


def _cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout


def _timed(fn: object, reps: int) -> float:
    started = time.perf_counter()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - started) / reps


KINDS = ("logistic_regression", "hist_gradient_boosting", "random_forest")


def _explain_cost(work: Path) -> list[tuple[str, float, float]]:
    import orjson

    from mlcycle.config import get_settings
    from mlcycle.datagen import generate
    from mlcycle.serve.batch import load_model
    from mlcycle.serve.security import KeyRing
    from mlcycle.serve.service import PredictService
    from mlcycle.spec import load_spec

    settings = get_settings().model_copy(
        update={"data_dir": work, "mongo_uri": None, "mlflow_tracking_uri": None}
    )
    spec = load_spec(settings.spec_path)
    model = load_model(settings, spec, None)
    service = PredictService(KeyRing([]), lambda: model, 64 << 20, 20_000, log=lambda: None)
    rows = generate(spec, 10_000, 3)[[spec.id_column, *spec.feature_columns]]
    first = rows.head(1).to_dict("records")[0]
    one = orjson.dumps(
        {k: (None if v != v else v) for k, v in first.items()}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    columns = {c: [None if v != v else v for v in rows[c].tolist()] for c in rows.columns}
    many = orjson.dumps({"columns": columns}, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"content-type": "application/json"}
    out = []
    for name, body, reps in (("1 record", one, 100), ("10,000 rows", many, 1)):
        plain = _timed(lambda b=body: service.handle(b, headers), reps)
        explained = _timed(lambda b=body: service.handle(b, headers, explain=True), reps)
        out.append((name, plain * 1000, explained * 1000))
    return out


COMPARED_ROWS = 1_000


def _shap_reference(work: Path) -> tuple[float, float] | None:
    """(mlcycle's TreeExplainer, shap's TreeExplainer) ms on the same COMPARED_ROWS rows,
    each encoded as its explainer takes them; None for a linear model or without shap."""
    try:
        import shap
    except ImportError:
        return None
    import mlflow

    from mlcycle.config import get_settings
    from mlcycle.datagen import generate
    from mlcycle.serve.batch import load_model
    from mlcycle.spec import load_spec
    from mlcycle.train.features import model_frame
    from mlcycle.train.mlflow_model import load_pipeline

    settings = get_settings().model_copy(
        update={"data_dir": work, "mongo_uri": None, "mlflow_tracking_uri": None}
    )
    spec = load_spec(settings.spec_path)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    pipeline = load_pipeline(f"models:/{spec.registered_model}@champion")
    model = pipeline.named_steps["model"]
    served = load_model(settings, spec, None)
    if not hasattr(served.scorer, "explain") or not (
        hasattr(model, "estimators_") or hasattr(model, "_predictors")
    ):
        return None
    raw = generate(spec, COMPARED_ROWS, 3)
    columns = {
        c: raw[c].astype(object).where(raw[c].notna(), None).tolist() for c in spec.feature_columns
    }
    feed = served.validator.validate_columns(columns, len(raw))
    started = time.perf_counter()
    served.scorer.explain(feed)
    ours = (time.perf_counter() - started) * 1000
    encoded = pipeline[:-1].transform(model_frame(raw, spec))
    started = time.perf_counter()
    shap.TreeExplainer(model).shap_values(encoded)
    return ours, (time.perf_counter() - started) * 1000


def _predict_runs(env: dict[str, str], source: Path, out: Path, runs: int, *extra: str) -> list:
    """rows/s of each `mlcycle predict --json` run (its own timer)."""
    speeds = []
    for i in range(runs):
        target = str(out.with_name(f"{out.name}{i}.parquet"))
        found = json.loads(
            _cli(env, "predict", "--source", str(source), "--out", target, "--json", *extra)
        )
        speeds.append(found["scored"] / found["seconds"])
    return speeds


def _spread(speeds: list[float]) -> str:
    return f"{statistics.median(speeds):,.0f} | {min(speeds):,.0f}-{max(speeds):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlcycle-batch-bench-"))
    env = {**os.environ, "MLCYCLE_DATA_DIR": str(work / "data"), "MLCYCLE_LOG_LEVEL": "WARNING"}
    for key in ("MLFLOW_TRACKING_URI", "MONGO_URI"):
        env.pop(key, None)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    _cli(env, "demo-data", "--rows", "2000", "--out", str(work / "raw"))
    for kind in KINDS:
        _cli({**env, "MLCYCLE_DATA_DIR": str(work / kind)}, "etl", "--source", str(work / "raw"))
        config = work / f"{kind}.yaml"
        config.write_text(f"model:\n  kind: {kind}\n")
        kind_env = {**env, "MLCYCLE_DATA_DIR": str(work / kind)}
        _cli(kind_env, "train", "--config", str(config), "--json")
    env["MLCYCLE_DATA_DIR"] = str(work / KINDS[0])
    from mlcycle.config import get_settings
    from mlcycle.datagen import generate
    from mlcycle.spec import load_spec

    spec = load_spec(get_settings().spec_path)
    big = generate(spec, args.rows, 11).drop(columns=[spec.target.column])  # type: ignore[union-attr]
    source = work / "applicants.parquet"
    big.to_parquet(source, index=False)
    speeds = _predict_runs(env, source, work / "s", args.runs)
    print(f"mlcycle predict, {args.rows:,} rows Parquet to Parquet, {args.runs} runs")
    print("")
    print("| source | engine | rows/s (median) | min-max |")
    print("|---|---|---|---|")
    print(f"| one file | local | {_spread(speeds)} |")
    folder = work / "applicants"
    folder.mkdir()
    step = -(-len(big) // args.workers)
    for k in range(args.workers):
        big.iloc[k * step : (k + 1) * step].to_parquet(folder / f"part{k}.parquet", index=False)
    from tests.servers import DaskCluster

    cluster = DaskCluster(work / "dask", {**env}, args.workers).start()
    try:
        local = _predict_runs(env, folder, work / "f", args.runs)
        dask = _predict_runs(
            env, folder, work / "d", args.runs, "--engine", "dask", "--scheduler", cluster.address
        )
    finally:
        cluster.stop()
    print(f"| {args.workers} files | local | {_spread(local)} |")
    print(f"| {args.workers} files | dask, {args.workers} workers | {_spread(dask)} |")
    print("")
    print("explanations in-process (PredictService.handle), mean time a request")
    print("")
    print("| model kind | request | plain ms | explain=true ms | ratio |")
    print("|---|---|---|---|---|")
    compared = {}
    for kind in KINDS:
        os.environ["MLCYCLE_DATA_DIR"] = str(work / kind)
        for name, plain, explained in _explain_cost(work / kind):
            print(f"| {kind} | {name} | {plain:.3f} | {explained:.3f} | {explained / plain:.1f}x |")
        compared[kind] = _shap_reference(work / kind)
    print("")
    print(
        f"SHAP values of the same {COMPARED_ROWS:,} rows: mlcycle's numpy TreeSHAP "
        "(as served) and shap's TreeExplainer (C++), in the same run"
    )
    print("")
    print("| model kind | mlcycle ms | shap ms | mlcycle / shap |")
    print("|---|---|---|---|")
    for kind, found in compared.items():
        if found is not None:
            print(f"| {kind} | {found[0]:.0f} | {found[1]:.0f} | {found[0] / found[1]:.2f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from benchmarks.common import record

    record("batch", main)
