"""A year in production, simulated through the real commands.

Twelve monthly periods of synthetic loan applications whose world drifts (incomes
inflate, the semi-urban share grows, and from halfway the credit history matters less
while the area and the loan's size matter more), with labels arriving one period late:

    month m: the labels of month m-1 arrive (`mlcycle etl`), `mlcycle monitor --since
    <month m-1> --retrain` judges month m-1's traffic (drift, realized performance,
    retrain through the gate, the rollback policy), then month m's applications are
    sent to the running `mlcycle serve` (which picks up any new champion by itself).

It prints a timeline table, draws a PNG of the champion's realized ROC AUC per month
with the promotions and rollbacks marked, and checks the invariants an operator relies
on: every alias change has a history entry with its cause; no version is trained on data
another version already learned from; the same two versions on the same rows always get
the same verdict; the server never answered 5xx while the alias moved; when the world
changes, the champion at the end beats the first model on the last months.

    python benchmarks/year.py [--months 12] [--rows 800] [--png docs/img/year.png]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def world(base: dict[str, Any], month: int, months: int) -> dict[str, Any]:
    """The loan spec's demo world in `month`: incomes up ~25 % over the year, the
    semi-urban share growing, and from halfway other things deciding approval."""
    spec = json.loads(json.dumps(base))
    cols = spec["columns"]
    cols["ApplicantIncome"]["demo"]["median"] *= 1.25 ** (month / max(months - 1, 1))
    weights = cols["Property_Area"]["demo"]["weights"]
    weights["Semiurban"] += 0.04 * month
    if month >= months // 2:
        cols["Credit_History"]["demo"]["effect"] = {"1": 0.3, "0": -0.4}
        cols["Property_Area"]["demo"]["effect"] = {"Semiurban": 1.4, "Rural": -1.2}
        cols["LoanAmount"]["demo"]["effect"] = -1.0
    return spec


class Project:
    """A scratch mlcycle project driven through its command line."""

    def __init__(self, root: Path) -> None:
        self.root = root
        outside = ("MLCYCLE_", "MONGO_URI", "MLFLOW_TRACKING_URI")  # the project's own only
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(outside)},
            "MLCYCLE_RELOAD_INTERVAL": "1",
            "MLCYCLE_LOG_LEVEL": "WARNING",
        }

    def cli(self, *args: str, ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "mlcycle.cli", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode not in ok:
            raise RuntimeError(f"mlcycle {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        try:
            out: dict[str, Any] = json.loads(done.stdout) if "--json" in args else {}
        except ValueError as err:
            raise RuntimeError(f"mlcycle {' '.join(args)}: not JSON: {done.stdout[:500]}") from err
        out.setdefault("_exit", done.returncode)
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _send(url: str, frame: pd.DataFrame, target: str, codes: list[int]) -> None:
    """The month's applications, features only, to /predict in batches of 100."""
    import httpx

    records = [
        {k: (None if pd.isna(v) else v) for k, v in rec.items() if k != target}
        for rec in frame.to_dict("records")
    ]
    with httpx.Client(base_url=url, timeout=60) as client:
        for start in range(0, len(records), 100):
            resp = client.post("/predict", json={"records": records[start : start + 100]})
            codes.append(resp.status_code)


def simulate(
    root: Path, months: int = 12, rows: int = 800, initial: int = 2000, say: Any = print
) -> dict[str, Any]:
    """Run the year in `root` (an empty folder); the timeline and the checks' inputs."""
    import yaml

    from mlcycle.datagen import generate
    from mlcycle.spec import parse_spec
    from mlcycle.store.base import predictions_collection
    from mlcycle.store.embedded import EmbeddedStore

    project = Project(root)
    project.cli("init")
    config = root / "configs" / "train.yaml"
    cfg = yaml.safe_load(config.read_text())
    # a retrained version shadows the champion first; the monitor promotes it when it is
    # better on the same live rows (or drops it), and may roll back a failing champion
    cfg["gate"]["on_pass"] = "challenger"
    cfg["monitor"]["challenger"] = {
        "min_paired": 200,
        "promote_when_better": True,
        "drop_when_worse": True,
    }
    cfg["monitor"]["rollback"] = {"enabled": True, "min_matured": 50, "margin": 0.0}
    cfg["monitor"]["min_rows"] = 50
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    base = yaml.safe_load((root / "datasets" / "loan.yaml").read_text())
    target = base["target"]["column"] if isinstance(base["target"], dict) else base["target"]
    raw = root / "data" / "raw"
    generate(parse_spec(world(base, 0, months)), initial, seed=1000).to_csv(
        raw / "history.csv", index=False
    )
    project.cli("etl", "--json")
    first = project.cli("train", "--json")
    say(f"month 0: v{first['version']} trained on {first['rows']} rows")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlcycle.cli", "serve", "--port", str(port)],
        cwd=root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=(root / "serve.log").open("w"),
    )
    codes: list[int] = []
    timeline: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    starts: list[datetime] = []
    store = EmbeddedStore(root / "data" / "store.sqlite3")
    try:
        _wait(lambda: _ready(url), 120, "the server")
        for month in range(months + 1):
            if month >= 1:
                timeline.append(_judge_month(project, raw, frames, starts, month - 1))
                say(_line(timeline[-1]))
            if month == months:
                break
            apps = generate(parse_spec(world(base, month, months)), rows, seed=2000 + month)
            apps[base["id_column"]] = [f"M{month:02d}-{i:06d}" for i in range(len(apps))]
            frames.append(apps)
            starts.append(datetime.now(UTC))
            logged = store.count(predictions_collection("loan"))
            _send(url, apps, target, codes)
            batches = -(-len(apps) // 100)
            _wait(
                lambda n=logged + batches: store.count(predictions_collection("loan")) >= n,
                120,
                "the prediction log",
            )
    finally:
        server.terminate()
        server.wait(30)
        store.close()
    models = project.cli("models", "--json")
    history = project.cli("history", "--json")
    return {
        "timeline": timeline,
        "codes": codes,
        "models": models,
        "history": history,
        "last": pd.concat(frames[-max(2, months // 4) :], ignore_index=True),
        "first_version": first["version"],
        "target": target,
    }


def _judge_month(
    project: Project, raw: Path, frames: list[pd.DataFrame], starts: list[datetime], month: int
) -> dict[str, Any]:
    """Month `month`'s labels arrive; its traffic is monitored with the retrain policy."""
    labels = raw / f"labels-{month:02d}.csv"
    frames[month].to_csv(labels, index=False)
    project.cli("etl", "--source", str(labels), "--json")
    before = project.cli("models", "--json")
    report = project.cli(
        "monitor", "--since", starts[month].isoformat(), "--retrain", "--json", ok=(0, 3, 4)
    )
    after = project.cli("models", "--json")
    perf = report.get("performance") or {}
    retrain = report.get("retrain") or {}
    rollback = report.get("rollback") or {}
    shadow = report.get("challenger") or {}
    return {
        "month": month + 1,
        "served": report.get("model_version"),
        "verdict": report.get("verdict"),
        "roc_auc": perf.get("roc_auc"),
        "validation": (perf.get("validation") or {}).get("roc_auc"),
        "retrain": (
            f"v{retrain['version']} {'passed' if retrain.get('promoted') else 'refused'}"
            if retrain.get("version")
            else (retrain.get("skipped") or ("fires" if retrain.get("reason") else "-"))
        ),
        "rollback": rollback.get("action", "-"),
        "challenger": (
            f"v{shadow['version']} {shadow.get('verdict')}"
            + (f", {shadow['action']['action']}" if shadow.get("action") else "")
            if shadow.get("version")
            else "-"
        ),
        "challenger_auc": (shadow.get("roc_auc") or {}).get("second"),
        "champion_before": _champion(before),
        "champion_after": _champion(after),
    }


def _champion(models: dict[str, Any]) -> str | None:
    return next((v["version"] for v in models["versions"] if "champion" in v["aliases"]), None)


def _line(row: dict[str, Any]) -> str:
    auc = "-" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
    return (
        f"| {row['month']:>2} | v{row['served']} | {auc} | {row['verdict']} | "
        f"{row['retrain']} | {row['challenger']} | {row['rollback']} | v{row['champion_after']} |"
    )


def check(result: dict[str, Any], root: Path) -> dict[str, Any]:
    """The invariants; raises AssertionError naming the one that fails. Returns the
    first and the final champion's ROC AUC on the last months' labelled rows."""
    assert all(code < 500 for code in result["codes"]), "the server answered 5xx"
    events = result["history"]["events"]
    moved = [e for e in events if e.get("before") != e.get("after")]
    assert all(e.get("reason") and e.get("by") for e in moved), "an alias moved without a cause"
    changes = 0
    for row in result["timeline"]:
        if row["champion_before"] != row["champion_after"]:
            changes += 1
            assert any(e.get("after") == row["champion_after"] for e in moved), row
    hashes = [v["data_hash"] for v in result["models"]["versions"]]
    assert len(hashes) == len(set(hashes)), "two versions were trained on the same data"
    verdicts: dict[tuple[Any, ...], set[str]] = {}
    for e in events:
        evaluation = e.get("evaluation") or {}
        rows = (evaluation.get("set") or {}).get("hash")
        if e.get("candidate") and rows and e.get("action") in ("promote", "refuse"):
            key = (e["candidate"], e.get("before"), rows)
            verdicts.setdefault(key, set()).add(e["action"])
    assert all(len(v) == 1 for v in verdicts.values()), f"contradicting verdicts: {verdicts}"
    final = _champion(result["models"])
    scores = _scores(root, result, [result["first_version"], final])
    return {"changes": changes, "first": scores[0], "final": scores[1], "final_version": final}


def _scores(root: Path, result: dict[str, Any], versions: list[Any]) -> list[float]:
    import mlflow
    from sklearn.metrics import roc_auc_score

    uri = f"sqlite:///{root / 'data' / 'mlflow.db'}"
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)  # the project's registry too: `models:/` URIs resolve there
    mlflow.set_registry_uri(uri)
    last = result["last"]
    truth = (last[result["target"]].astype(str) == "Y").to_numpy()
    out = []
    try:
        for version in versions:
            with warnings.catch_warnings():  # MLflow's advice on type hints, once a load
                warnings.simplefilter("ignore", UserWarning)
                model = mlflow.pyfunc.load_model(f"models:/loan-approval/{version}")
            probability = model.predict(last.drop(columns=[result["target"]]))["probability"]
            out.append(float(roc_auc_score(truth, np.asarray(probability))))
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    return out


def draw(result: dict[str, Any], png: Path) -> None:
    """Realized ROC AUC of the served model per month, promotions and rollbacks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["timeline"]
    months = [r["month"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    auc = [np.nan if r["roc_auc"] is None else r["roc_auc"] for r in rows]
    ax.plot(months, auc, marker="o", color="#e4572e", label="champion, realized ROC AUC")
    shadow = [np.nan if r["challenger_auc"] is None else r["challenger_auc"] for r in rows]
    if not np.all(np.isnan(shadow)):
        ax.plot(months, shadow, marker="s", ls="", color="#1565c0", label="challenger (shadow)")
    valid = [np.nan if r["validation"] is None else r["validation"] for r in rows]
    ax.plot(months, valid, ls="--", color="#8da9c4", label="its validation ROC AUC")
    for r in rows:
        if r["champion_before"] != r["champion_after"]:
            rolled = r["rollback"] == "rollback"
            ax.axvline(r["month"] + 0.5, color="#c62828" if rolled else "#2e7d32", ls=":")
            ax.annotate(
                f"{'rollback' if rolled else 'promote'} v{r['champion_after']}",
                (r["month"] + 0.55, 0.88),
                rotation=90,
                fontsize=8,
            )
    ax.axvspan(len(months) / 2 + 0.5, len(months) + 0.5, color="#f6f6f6", zorder=0)
    ax.set_xlabel("month (labels one month late; shaded: the world has changed)")
    ax.set_ylabel("ROC AUC")
    ax.set_ylim(0.5, 1.0)
    ax.set_xticks(months)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rows", type=int, default=800, help="applications a month")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "year.png")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlcycle-year-") as tmp:
        print(
            "| month | served | realized AUC | verdict | retrain | challenger | rollback "
            "| champion after |"
        )
        print("|---:|---|---:|---|---|---|---|---|")
        result = simulate(Path(tmp), args.months, args.rows, say=print)
        outcome = check(result, Path(tmp))
        draw(result, args.png)
    print(
        f"\n{outcome['changes']} champion change(s); on the last months' labelled rows the "
        f"first model v{result['first_version']} scores ROC AUC {outcome['first']:.3f}, the "
        f"final champion v{outcome['final_version']} {outcome['final']:.3f}; "
        f"{time.perf_counter() - started:.0f} s; picture: {args.png}"
    )


if __name__ == "__main__":
    main()
