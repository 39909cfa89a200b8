"""`mlcycle monitor`: a window of the prediction log against the model's reference profile.

prediction log (one model version, `--since` / `--last`) read column-wise in chunks ->
per feature PSI + KS or chi-square + missing share + unseen categories -> score PSI and
label mix -> realized performance on the predictions whose labels have arrived since ->
verdict -> one report document in `<dataset>_monitoring` (-> retraining if the policy
in the training config says so).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from mlcycle import registry
from mlcycle.bundle import FOLDER, PROFILE_FILE
from mlcycle.config import Settings
from mlcycle.errors import MlcycleError, ModelNotFound, NoReference
from mlcycle.logging_setup import step
from mlcycle.monitor.config import MonitorConfig
from mlcycle.monitor.fairness import production_fairness
from mlcycle.monitor.report import MonitorReport
from mlcycle.monitor.stats import (
    MISSING_BIN,
    auc_interval,
    calibration,
    category_counts,
    chi2_test,
    f1_interval,
    ks_test,
    numeric_counts,
    psi,
    roc_auc,
    shares,
    wilson,
)
from mlcycle.monitor.window import Window, read_window
from mlcycle.spec import DatasetSpec, value_text
from mlcycle.store.base import Store, as_datetime, monitoring_collection, predictions_collection

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_DRIFT = 3
EXIT_DEGRADED = 4
VERDICT_EXIT = {
    "ok": EXIT_OK,
    "watch": EXIT_OK,
    "insufficient": EXIT_OK,
    "no_data": EXIT_OK,
    "drift": EXIT_DRIFT,
    "degraded": EXIT_DEGRADED,
}
"""Exit codes: 0 ok / watch / too few rows / no predictions, 3 drift, 4 realized
performance below the policy; 1 and 2 keep their meaning (error, bad input)."""

DEFAULT_LAST = 10_000


def newest_version(store: Store, spec: DatasetSpec, model_name: str) -> str | None:
    """The model version of the newest prediction logged for `model_name` (the log is
    walked newest first, so this reads a page or two, not the log)."""
    for docs in store.scan(predictions_collection(spec.name), chunk=500):
        for doc in docs:
            if doc.get("model_name") == model_name:
                return str(doc.get("model_version"))
    return None


def load_reference(settings: Settings, model_name: str, version: str) -> tuple[dict[str, Any], str]:
    """The version's reference profile (from its MLflow run) and its run id."""
    import mlflow

    client = registry.connect(settings, create=False)
    info = registry.get_version(client, model_name, version=version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=info.run_id,
                artifact_path=f"{FOLDER}/{PROFILE_FILE}",
                dst_path=tmp,
                tracking_uri=settings.tracking_uri,
            )
            return json.loads(Path(path).read_text()), info.run_id
        except (OSError, ValueError, mlflow.exceptions.MlflowException) as err:
            raise NoReference(
                f"{model_name} v{version} (run {info.run_id}) has no reference profile "
                f"({type(err).__name__}): it was trained before monitoring existed; "
                "train a new version to monitor it"
            ) from err


def _status(value: float, p_value: float, cfg: MonitorConfig) -> tuple[str, str]:
    """(ok | watch | drift, why): a PSI at or over a threshold counts only when the
    test says the change is not chance (p < alpha)."""
    level = "drift" if value >= cfg.psi_act else "watch" if value >= cfg.psi_watch else None
    shown = f"PSI {value:.3f}"
    if level is None:
        return "ok", f"{shown} < watch {cfg.psi_watch:g}"
    limit = cfg.psi_act if level == "drift" else cfg.psi_watch
    if p_value < cfg.alpha:
        return level, f"{shown} >= {level} {limit:g} and p {p_value:.3g} < alpha {cfg.alpha:g}"
    return "ok", (
        f"{shown} >= {level} {limit:g} but p {p_value:.3g} >= alpha {cfg.alpha:g}: "
        "within what chance gives on this many rows"
    )


def _numeric_bins(edges: list[float]) -> list[str]:
    if not edges:
        return ["all", MISSING_BIN]
    text = [f"{e:.4g}" for e in edges]
    names = [f"< {text[0]}"]
    names += [f"{a} – {b}" for a, b in pairwise(text)]
    return [*names, f"≥ {text[-1]}", MISSING_BIN]


def numeric_drift(ref: dict[str, Any], values: np.ndarray, cfg: MonitorConfig) -> dict[str, Any]:
    current = numeric_counts(values, ref["edges"])
    reference = np.asarray([*ref["counts"], ref["missing"]], dtype=np.int64)
    value = psi(reference, current)
    stat, p = ks_test(np.asarray(ref["sample"], dtype=np.float64), values)
    out = _common(value, p, reference, current, cfg)
    present = values[~np.isnan(values)]
    out.update(
        kind="numeric",
        test={"name": "ks", "statistic": stat, "p_value": p},
        bins=_numeric_bins(ref["edges"]),
        mean={
            "reference": ref.get("mean"),
            "current": float(present.mean()) if present.size else None,
        },
        summary={
            "reference": _reference_summary(ref),
            "current": _numeric_summary(values),
        },
    )
    return out


def _numeric_summary(values: np.ndarray) -> dict[str, float | int | None]:
    """Rows, missing share and the present values' mean, std, min, quartiles and max (the
    reference's from the training profile's sample)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    out: dict[str, float | int | None] = {
        "rows": int(values.size),
        "missing": float(1 - present.size / values.size) if values.size else None,
    }
    if not present.size:
        return out | dict.fromkeys(("mean", "std", "min", "p25", "median", "p75", "max"))
    q = np.quantile(present, [0.0, 0.25, 0.5, 0.75, 1.0])
    return out | {
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "max": float(q[4]),
    }


def _reference_summary(ref: dict[str, Any]) -> dict[str, float | int | None]:
    """`_numeric_summary` of the training profile: its rows, missing share, mean and std;
    the quartiles, min and max from its sample of present values."""
    out = _numeric_summary(np.asarray(ref["sample"], dtype=np.float64))
    rows = ref.get("rows")
    if rows:
        out["rows"] = int(rows)
        out["missing"] = float(ref.get("missing", 0)) / rows
    for key in ("mean", "std"):
        if ref.get(key) is not None:
            out[key] = float(ref[key])
    return out


def _categorical_summary(counts: dict[Any, int]) -> dict[str, Any]:
    """Rows, distinct values and the most common value with its share."""
    present = {k: int(v) for k, v in counts.items() if k is not None}
    total = sum(present.values())
    top = max(present.items(), key=lambda kv: (kv[1], str(kv[0])), default=(None, 0))
    return {
        "rows": total,
        "distinct": len([v for v in present.values() if v]),
        "top": None if top[0] is None else str(top[0]),
        "top_share": top[1] / total if total else None,
    }


def categorical_drift(
    ref: dict[str, Any], counts: Counter[Any], cfg: MonitorConfig
) -> dict[str, Any]:
    names, reference, current = category_counts(ref["counts"], counts)
    value = psi(reference, current)
    stat, p = chi2_test(reference, current)
    out = _common(value, p, reference, current, cfg)
    unseen = sorted(
        ((str(k), int(v)) for k, v in counts.items() if k is not None and k not in ref["counts"]),
        key=lambda kv: -kv[1],
    )
    out.update(
        kind="categorical",
        test={"name": "chi2", "statistic": stat, "p_value": p},
        bins=names,
        unseen={"share": float(current[-2] / max(current.sum(), 1)), "values": dict(unseen[:10])},
        summary={
            "reference": _categorical_summary(ref["counts"]),
            "current": _categorical_summary(dict(counts)),
        },
    )
    return out


def _common(
    value: float, p: float, reference: np.ndarray, current: np.ndarray, cfg: MonitorConfig
) -> dict[str, Any]:
    status, why = _status(value, p, cfg)
    missing_ref = float(reference[-1] / max(reference.sum(), 1))
    missing_cur = float(current[-1] / max(current.sum(), 1))
    if status == "ok" and abs(missing_cur - missing_ref) >= cfg.missing_change and p < cfg.alpha:
        status = "watch"
        why = (
            f"missing share {missing_ref:.1%} -> {missing_cur:.1%} (change >= "
            f"{cfg.missing_change:g}) and p {p:.3g} < alpha {cfg.alpha:g}"
        )
    return {
        "psi": value,
        "status": status,
        "why": why,
        "missing": {"reference": missing_ref, "current": missing_cur},
        "reference": [float(s) for s in shares(reference)],
        "current": [float(s) for s in shares(current)],
        "rows": int(current.sum()),
    }


def realized_performance(
    store: Store,
    spec: DatasetSpec,
    win: Window,
    ref: dict[str, Any],
    cfg: MonitorConfig | None = None,
    stored: Any = None,
) -> dict[str, Any] | None:
    """Predictions whose ids now have a label in the store (matured), scored against the
    labels: accuracy (Wilson interval), F1 (bootstrap), ROC AUC (Hanley-McNeil),
    calibration, next to the validation metrics. None when no prediction matured.
    `stored`: `stored_rows`' frame when read already."""
    import pandas as pd

    assert spec.target is not None
    if win.ids.size == 0:
        return None
    if stored is None:
        stored = stored_rows(store, spec, [])
    truth = stored[stored["truth"].notna()][["id", "truth"]]
    if truth.empty:
        return None
    preds = pd.DataFrame({"id": win.ids, "score": win.scores, "label": win.labels})
    if win.stamps.size == win.ids.size:
        preds["t"] = win.stamps
    preds = preds[preds["id"].notna()]
    preds["id"] = _id_text(preds["id"])
    preds = preds[preds["id"].isin(truth["id"])]  # matured only: a hash lookup per id
    preds = preds.drop_duplicates("id", keep="first")  # newest first: the latest prediction
    joined = preds.merge(truth, on="id", how="inner")
    if joined.empty:
        return None
    score = joined["score"].to_numpy(dtype=np.float64)
    validation = ref.get("validation", {})
    positive = ref.get("positive", spec.target.positive)
    periods = _periods(joined, positive, cfg) | _confusion(joined, spec.target.label_order)
    if positive is None:  # multiclass: the top label right or wrong, its score's calibration
        hit = (joined["truth"] == joined["label"]).to_numpy()
        n, correct = int(hit.size), int(hit.sum())
        return periods | {
            "matured": n,
            "positives": None,
            "accuracy": correct / n,
            "accuracy_ci": list(wilson(correct, n)),
            "f1": None,
            "f1_ci": None,
            "roc_auc": None,
            "roc_auc_ci": None,
            "calibration": calibration(hit, score),
            "validation": {k: validation.get(k) for k in ("accuracy", "f1", "roc_auc")},
        }
    positive = str(positive)
    y = (joined["truth"] == positive).to_numpy()
    pred = (joined["label"] == positive).to_numpy()
    n = int(y.size)
    correct = int((y == pred).sum())
    tp, fp, fn = int((y & pred).sum()), int((~y & pred).sum()), int((y & ~pred).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    auc = roc_auc(y, score)
    n_pos = int(y.sum())
    result = periods | {
        "matured": n,
        "positives": n_pos,
        "accuracy": correct / n,
        "accuracy_ci": list(wilson(correct, n)),
        "f1": f1,
        "f1_ci": list(f1_interval(y, pred)),
        "roc_auc": None if math.isnan(auc) else auc,
        "roc_auc_ci": None if math.isnan(auc) else list(auc_interval(auc, n_pos, n - n_pos)),
        "calibration": calibration(y, score),
        "validation": {k: validation.get(k) for k in ("accuracy", "f1", "roc_auc")},
    }
    return result


def stored_rows(store: Store, spec: DatasetSpec, extra: list[str]) -> Any:
    """The stored rows by id: `id` as text, `truth` (the label's text, None when not yet
    known) and the `extra` columns; only labelled rows unless `extra` asks for more."""
    import pandas as pd

    assert spec.target is not None
    target = spec.target.column
    rows = store.read_snapshot(
        spec.name, columns=[spec.id_column, target, *extra], require=None if extra else target
    )
    if rows.empty:
        return pd.DataFrame({"id": [], "truth": [], **{c: [] for c in extra}})
    label = rows[target] if target in rows else pd.Series([None] * len(rows), index=rows.index)
    known = label.notna()
    truth = pd.Series([None] * len(rows), index=rows.index, dtype=object)
    truth[known] = label[known].map(value_text)
    out = pd.DataFrame({"id": _id_text(rows[spec.id_column]), "truth": truth})
    for column in extra:
        out[column] = rows.get(column)
    return out.reset_index(drop=True)


def _confusion(joined: Any, order: list[str]) -> dict[str, Any]:
    """The confusion matrix of the matured rows (`counts[true][predicted]`, the labels in
    the spec's order) and each label's precision, recall, F1 and
    support: what is right and wrong, class by class."""
    known = [*order, *sorted((set(joined["truth"]) | set(joined["label"])) - set(order))]
    index = {label: i for i, label in enumerate(known)}
    matrix = np.zeros((len(known), len(known)), dtype=np.int64)
    np.add.at(
        matrix,
        (joined["truth"].map(index).to_numpy(), joined["label"].map(index).to_numpy()),
        1,
    )
    per_class = {}
    for i, label in enumerate(known):
        tp, support, predicted = int(matrix[i, i]), int(matrix[i].sum()), int(matrix[:, i].sum())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = 2 * tp / (support + predicted) if support + predicted else None
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
    counts = {t: {p: int(matrix[i, j]) for j, p in enumerate(known)} for i, t in enumerate(known)}
    # a mapping of mappings, not nested arrays (which FerretDB cannot store)
    return {"confusion": {"labels": known, "counts": counts}, "per_class": per_class}


def _periods(joined: Any, positive: Any, cfg: MonitorConfig | None) -> dict[str, Any]:
    """Realized accuracy and ROC AUC per period of `cfg.period_days`, counted back from
    the newest matured prediction (oldest first), and the trend over the periods that
    hold `min_matured` rows: `{}` when periods are off or the window has no times."""
    if cfg is None or cfg.period_days is None or "t" not in joined:
        return {}
    span = cfg.period_days * 86_400.0
    end = float(joined["t"].max())
    back = np.floor((end - joined["t"].to_numpy(dtype=np.float64)) / span).astype(np.int64)
    out: list[dict[str, Any]] = []
    for k in range(min(int(back.max()), cfg.periods - 1), -1, -1):
        part = joined[back == k]
        if part.empty:
            continue
        if positive is None:
            y = part["truth"].to_numpy()
            pred, auc = part["label"].to_numpy(), float("nan")
        else:
            y = (part["truth"] == str(positive)).to_numpy()
            pred = (part["label"] == str(positive)).to_numpy()
            auc = roc_auc(y, part["score"].to_numpy(dtype=np.float64))
        out.append(
            {
                "start": datetime.fromtimestamp(end - (k + 1) * span, UTC),
                "end": datetime.fromtimestamp(end - k * span, UTC),
                "matured": len(part),
                "accuracy": float((y == pred).mean()),
                "roc_auc": None if math.isnan(auc) else auc,
            }
        )
    metric = "accuracy" if positive is None else "roc_auc"
    enough = [p for p in out if p["matured"] >= cfg.retrain.min_matured and p[metric] is not None]
    trend = None
    if len(enough) >= 2:
        x = np.arange(len(enough), dtype=np.float64)
        slope = float(np.polyfit(x, [p[metric] for p in enough], 1)[0])
        trend = {"metric": metric, "per_period": slope, "periods": len(enough)}
    return {"periods": out, "trend": trend}


def _id_text(ids: Any) -> Any:
    """Ids as text, as `value_text` writes them (1.0 -> "1"); text ids pass unchanged
    without a Python call per id."""
    import pandas as pd

    if pd.api.types.infer_dtype(ids, skipna=True) in ("string", "empty"):
        return ids.astype(object)
    return ids.map(value_text)


def verdict(report: dict[str, Any], cfg: MonitorConfig) -> tuple[str, list[str]]:
    """(verdict, reasons): no_data, insufficient, drift, degraded, watch or ok."""
    rows = report["window"]["rows"]
    if rows == 0:
        return "no_data", ["no predictions in the window"]
    if rows < cfg.min_rows:
        return "insufficient", [f"{rows} predictions, fewer than min_rows {cfg.min_rows}"]
    parts = {**report["features"], "(score)": report["score"]}
    drifted = [k for k, v in parts.items() if v["status"] == "drift"]
    if drifted:
        return "drift", [f"{k}: PSI {parts[k]['psi']:.3f}" for k in drifted]
    degraded = _auc_drop(report.get("performance"), cfg)
    if degraded:
        return "degraded", [degraded]
    watched = [k for k, v in parts.items() if v["status"] == "watch"]
    if watched:
        return "watch", [f"{k}: PSI {parts[k]['psi']:.3f}" for k in watched]
    return "ok", []


def _auc_drop(perf: dict[str, Any] | None, cfg: MonitorConfig) -> str | None:
    policy = cfg.retrain
    if perf is None or policy.auc_drop is None or perf["matured"] < policy.min_matured:
        return None
    realized, valid = perf.get("roc_auc"), perf["validation"].get("roc_auc")
    if realized is None or valid is None:
        return None
    if valid - realized > policy.auc_drop:
        return (
            f"realized ROC AUC {realized:.3f} on {perf['matured']} matured predictions is "
            f"{valid - realized:.3f} below validation {valid:.3f} (policy: {policy.auc_drop:g})"
        )
    newest = (perf.get("periods") or [None])[-1]
    if newest is None or newest["matured"] < policy.min_matured or newest["roc_auc"] is None:
        return None
    if valid - newest["roc_auc"] > policy.auc_drop:
        return (
            f"realized ROC AUC {newest['roc_auc']:.3f} on the newest period's "
            f"{newest['matured']} matured predictions ({_day(newest['start'])} to "
            f"{_day(newest['end'])}) is {valid - newest['roc_auc']:.3f} below validation "
            f"{valid:.3f} (policy: {policy.auc_drop:g}; the whole window: {realized:.3f})"
        )
    return None


def _day(value: Any) -> str:
    return str(as_datetime(value).date()) if value is not None else "?"


def retrain_reason(report: dict[str, Any], cfg: MonitorConfig) -> str | None:
    """Why the retraining policy fires for this report, or None."""
    policy = cfg.retrain
    if report["verdict"] in ("no_data", "insufficient"):
        return None
    if policy.psi is not None:
        hits = [
            f"{k} PSI {v['psi']:.3f}"
            for k, v in report["features"].items()
            if v["status"] == "drift" and v["psi"] >= policy.psi
        ]
        if hits:
            return f"drift at or above PSI {policy.psi:g}: {', '.join(hits)}"
    return _auc_drop(report.get("performance"), cfg)


def build_report(
    spec: DatasetSpec,
    ref: dict[str, Any],
    win: Window,
    cfg: MonitorConfig,
    performance: dict[str, Any] | None,
    since: datetime | None,
    last: int,
    run_id: str,
) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for name in spec.numeric_features:
        features[name] = numeric_drift(ref["features"][name], win.numeric[name], cfg)
    for name in spec.categorical_features:
        features[name] = categorical_drift(ref["features"][name], win.categorical[name], cfg)
    score = numeric_drift(ref["score"], win.scores, cfg)
    ref_pred = {str(k): int(v) for k, v in ref.get("predicted", {}).items()}
    labels = sorted(set(ref_pred) | {str(k) for k in win.predicted})
    total_ref, total_cur = max(sum(ref_pred.values()), 1), max(win.rows, 1)
    report: dict[str, Any] = {
        "_id": uuid.uuid4().hex,
        "ts": datetime.now(UTC),
        "dataset": spec.name,
        "model_name": win.model_name,
        "model_version": win.version,
        "run_id": run_id,
        "training_data_hash": ref.get("data_hash"),
        "training_rows": ref.get("rows"),
        "window": {
            "since": since,
            "last": last or None,
            "first_ts": win.first_ts,
            "last_ts": win.last_ts,
            "rows": win.rows,
            "requests": win.requests,
            "malformed": win.malformed,
        },
        "thresholds": cfg.model_dump(),
        "features": features,
        "score": score,
        "labels": {
            k: {
                "reference": ref_pred.get(k, 0) / total_ref,
                "current": int(win.predicted.get(k, 0)) / total_cur,
            }
            for k in labels
        },
        "performance": performance,
    }
    report["verdict"], report["reasons"] = verdict(report, cfg)
    report["flagged"] = sorted(k for k, v in features.items() if v["status"] != "ok")
    return report


def _challenger(
    settings: Settings,
    spec: DatasetSpec,
    cfg: MonitorConfig,
    store: Store,
    win: Window,
    ref: dict[str, Any],
    policy: Any,
) -> dict[str, Any] | None:
    """The shadow's paired comparison; `policy` (when given) acts on a decided one, and
    what it did is recorded as the comparison's `action`."""
    from mlcycle.monitor.challenger import compare

    assert spec.target is not None
    positive = ref.get("positive", spec.target.positive)
    found = compare(
        store,
        spec,
        win,
        None if positive is None else str(positive),
        alias=settings.shadow_alias.strip(),
        min_paired=cfg.challenger.min_paired,
    )
    if found is not None and policy is not None and found.get("verdict") != "undecided":
        try:
            action = policy(found)
        except MlcycleError as err:
            action = {"action": "error", "reason": str(err)}
        if action is not None:
            found["action"] = action
    return found


@dataclass
class MonitorResult:
    typed: MonitorReport
    exit_code: int

    @property
    def report(self) -> dict[str, Any]:
        """The stored document."""
        return self.typed.document()


def _stored(store: Store, spec: DatasetSpec, report: dict[str, Any]) -> MonitorReport:
    """The report checked against its type and appended to `<dataset>_monitoring`."""
    typed = MonitorReport.of(report)
    store.append(monitoring_collection(spec.name), [typed.document()])
    return typed


def _outcomes(
    store: Store, spec: DatasetSpec, win: Window, ref: dict[str, Any], cfg: MonitorConfig
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Realized performance and fairness by group: one read of the stored rows."""
    if not win.rows:
        return None, None
    others = [c for c in spec.sensitive if c not in win.groups] if spec.target else []
    stored = stored_rows(store, spec, others)
    return (
        realized_performance(store, spec, win, ref, cfg, stored),
        production_fairness(spec, win, ref, stored),
    )


def run_monitor(
    settings: Settings,
    spec: DatasetSpec,
    cfg: MonitorConfig,
    store: Store,
    version: str | None = None,
    since: datetime | None = None,
    last: int | None = None,
    retrain: bool = False,
    train: Any = None,
    challenger_policy: Any = None,
    rollback_policy: Any = None,
) -> MonitorResult:
    """The monitoring stage; `train` is called (no arguments) when `retrain` is set and
    the policy fires; its result is recorded in the report. With `retrain` set,
    `challenger_policy` is called with a decided paired comparison (better or worse) and
    what it did is recorded as the comparison's `action`. With `retrain` set and realized
    performance below the policy, `rollback_policy` is called with the window's ids and
    the reason; what it did is the report's `rollback`."""
    started = time.perf_counter()
    name = spec.registered_model
    last = DEFAULT_LAST if last is None and since is None else (last or 0)
    version = version or newest_version(store, spec, name)
    if version is None:
        raise ModelNotFound(
            f"no predictions of {name} are logged in {predictions_collection(spec.name)!r} "
            "yet: serve the model (with the prediction log on) and send it traffic first"
        )
    # the registry lookup (MLflow's client is slow to start) runs while the log is read
    with ThreadPoolExecutor(1, thread_name_prefix="reference") as pool:
        pending = pool.submit(load_reference, settings, name, version)
        try:
            with step(logger, f"reading the prediction log of {name} v{version}"):
                win = read_window(store, spec, name, version, since=since, last=last)
        finally:
            ref, run_id = pending.result()
    missing = [c for c in spec.feature_columns if c not in ref["features"]]
    if missing:
        raise MlcycleError(
            f"{name} v{version}'s reference profile lacks {', '.join(missing)}: the spec "
            "changed since it was trained; monitor with the spec it was trained on"
        )
    with step(logger, f"joining {win.rows:,} predictions with the labels that arrived"):
        performance, fairness = _outcomes(store, spec, win, ref, cfg)
    report = build_report(spec, ref, win, cfg, performance, since, last, run_id)
    report["fairness"] = fairness
    if settings.shadow_alias.strip() and spec.target is not None:
        report["challenger"] = _challenger(
            settings, spec, cfg, store, win, ref, challenger_policy if retrain else None
        )
    report["retrain"] = {"requested": retrain, "reason": retrain_reason(report, cfg)}
    degraded = _auc_drop(performance, cfg)
    if retrain and degraded and rollback_policy is not None:
        import pandas as pd

        ids = set(_id_text(pd.Series(win.ids[pd.notna(win.ids)], dtype=object)))
        try:
            report["rollback"] = rollback_policy(ids, degraded)
        except MlcycleError as err:
            report["rollback"] = {"action": "error", "reason": str(err)}
    if retrain and report["retrain"]["reason"] and train is not None:
        logger.info("retraining: %s", report["retrain"]["reason"])
        try:
            outcome = train()
            if outcome.skipped:
                report["retrain"].update(triggered=False, skipped=outcome.skipped)
            else:
                report["retrain"].update(
                    triggered=True,
                    run_id=outcome.run_id,
                    version=outcome.version,
                    promoted=bool(outcome.decision["promote"]),
                    gate=outcome.decision["reason"],
                )
        except MlcycleError as err:
            report["retrain"].update(triggered=True, error=str(err))
    report["retrain"].setdefault("triggered", False)
    report["seconds"] = round(time.perf_counter() - started, 3)
    typed = _stored(store, spec, report)
    return MonitorResult(typed, VERDICT_EXIT[typed.verdict])
