"""Train, evaluate, track and register: `run_train` is the stage's one entry point.

store snapshot (labelled rows) -> stratified hold-out + k-fold CV -> Pipeline fit on
the training part -> metrics next to a majority-class baseline and the current champion
(re-scored on the same hold-out) -> MLflow run (params, metrics, plots, lineage tags,
model with signature) -> registered version -> quality gate -> alias `champion`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import __version__, registry
from mlcycle.config import Settings
from mlcycle.engine import LOCAL, Engine
from mlcycle.errors import TrainingError
from mlcycle.gate import Decision, should_promote
from mlcycle.monitor.profile import PROFILE_FILE, reference_profile
from mlcycle.spec import NUMBER_LIMIT, DatasetSpec, value_text
from mlcycle.store.base import BATCHES, Store
from mlcycle.store.lease import describe_holder, live_holder
from mlcycle.train.config import TrainConfig
from mlcycle.train.export import export_onnx
from mlcycle.train.features import (
    MISSING,
    available_memory,
    build_pipeline,
    encoding_footprint,
    model_frame,
)
from mlcycle.train.linear import LINEAR_FILE, fold_linear
from mlcycle.train.mlflow_model import load_pipeline, log_pyfunc, log_training_input, raw_example

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


@dataclass(frozen=True)
class Snapshot:
    """The labelled rows training uses, sorted by id so the split is reproducible."""

    X: pd.DataFrame
    y: np.ndarray
    ids: list[str]
    data_hash: str
    batch_ids: list[str]
    batch_statuses: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainResult:
    run_id: str
    run_url: str
    model_name: str
    version: str
    rows: int
    data_hash: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    cv: dict[str, float]
    champion_before: dict[str, Any] | None
    decision: dict[str, Any]
    champion_after: str | None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_snapshot(store: Store, spec: DatasetSpec, engine: Engine = LOCAL) -> Snapshot:
    """Read the newest labelled rows and check they can train a model (on the dask
    engine, MongoDB is read by the workers in parallel `_id` ranges)."""
    if spec.target is None:
        raise TrainingError(f"dataset spec {spec.name!r} has no target column")
    target = spec.target.column
    holder = live_holder(store, spec.name)
    if holder is not None:
        raise TrainingError(
            f"dataset {spec.name!r} is being loaded right now by {describe_holder(holder)}: "
            "train when it has finished, so a model never learns from half a load"
        )
    columns = [spec.id_column, *spec.feature_columns, target, "_hash", "_batch_id"]
    if engine.distributed:
        from mlcycle.etl.distributed import read_snapshot_dask

        workers = max(1, len(engine.client.scheduler_info().get("workers", {})))
        frame = read_snapshot_dask(
            store, engine.client, spec.name, columns, target, parts=2 * workers
        )
    else:
        frame = store.read_snapshot(spec.name, columns=columns, require=target)
    if frame.empty:
        raise TrainingError(
            f"no labelled rows for dataset {spec.name!r} in the {store.name} store: "
            "run `mlcycle etl` on files that have the target column first"
        )
    empty = [c for c in spec.feature_columns if frame[c].isna().all()]
    if empty:
        raise TrainingError(
            f"feature column(s) {', '.join(empty)} have no values in the snapshot "
            "(missing from the stored rows?); fix the data or the spec's features"
        )
    frame = frame.sort_values(spec.id_column, kind="stable").reset_index(drop=True)
    labels = spec.target.labels
    # stored labels are text (category), numbers (integer) or booleans: compare as text
    y = frame[target].map(lambda v: labels.get(value_text(v)))
    if y.isna().any():
        bad = sorted(set(frame.loc[y.isna(), target].astype(str)))
        raise TrainingError(f"target values {bad} have no label mapping in the spec")
    classes = y.value_counts()
    if len(classes) < 2:
        raise TrainingError(
            f"only one class ({frame[target].iloc[0]!r}) among {len(frame)} labelled rows: "
            "a classifier needs at least two"
        )
    X = model_frame(frame, spec)
    numbers = X[spec.numeric_features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) & ~np.isnan(numbers) | (
        np.abs(np.nan_to_num(numbers)) > NUMBER_LIMIT
    )
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        where = ", ".join(
            f"{frame[spec.id_column].iloc[r]} ({', '.join(np.array(spec.numeric_features)[bad[r]])})"
            for r in rows[:10]
        )
        raise TrainingError(
            f"{len(rows)} stored row(s) hold a non-finite or out-of-range number (beyond "
            f"±{NUMBER_LIMIT:g}): {where}. Fix them at the source and rerun `mlcycle etl`"
        )
    batch_ids = sorted(frame["_batch_id"].dropna().astype(str).unique().tolist())
    digest = hashlib.sha256()
    for ident, h in zip(frame[spec.id_column].astype(str), frame["_hash"].astype(str), strict=True):
        digest.update(f"{ident}\t{h}\n".encode())
    return Snapshot(
        X=X,
        y=y.to_numpy(dtype=np.int64),
        ids=frame[spec.id_column].astype(str).tolist(),
        data_hash=digest.hexdigest(),
        batch_ids=batch_ids,
        batch_statuses={
            str(b["_id"]): str(b.get("status"))
            for b in store.find(BATCHES)
            if str(b.get("_id")) in set(batch_ids)
        },
    )


def profile(snapshot: Snapshot, spec: DatasetSpec) -> dict[str, Any]:
    """What `mlcycle preprocess` prints: rows, missing share per column, class balance."""
    assert spec.target is not None
    names = {v: k for k, v in spec.target.labels.items()}
    counts = pd.Series(snapshot.y).map(names).value_counts()
    return {
        "rows": len(snapshot.ids),
        "data_hash": snapshot.data_hash,
        "etl_batches": snapshot.batch_ids,
        "missing_share": {c: round(float(snapshot.X[c].isna().mean()), 4) for c in snapshot.X},
        "class_balance": {str(k): int(v) for k, v in counts.items()},
    }


def class_proba(model: Any, X: pd.DataFrame, classes: list[int]) -> np.ndarray:
    """Probabilities in the order of `classes` (a class the model never saw gets 0)."""
    proba = model.predict_proba(X)
    seen = [int(c) for c in model.classes_]
    out = np.zeros((len(X), len(classes)))
    for j, c in enumerate(classes):
        if c in seen:
            out[:, j] = proba[:, seen.index(c)]
    return out


def evaluate(
    model: Any, X: pd.DataFrame, y: np.ndarray, positive: int | None, classes: list[int]
) -> dict[str, float]:
    """Hold-out metrics. Binary: precision, recall and F1 of the positive label, ROC AUC
    of its probability. Multiclass (`positive` None): macro precision, recall and F1,
    one-vs-rest macro ROC AUC. Log loss over every class either way."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    proba = class_proba(model, X, classes)
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    if positive is not None:
        averaged: dict[str, Any] = {"pos_label": positive, "average": "binary"}
        auc = roc_auc_score(y == positive, proba[:, classes.index(positive)])
    else:
        averaged = {"average": "macro", "labels": classes}
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0, **averaged)),
        "recall": float(recall_score(y, pred, zero_division=0, **averaged)),
        "f1": float(f1_score(y, pred, zero_division=0, **averaged)),
        "roc_auc": float(auc),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=classes)),
    }


def cv_scorers(positive: int | None) -> dict[str, Any]:
    """The CV metrics with the meanings `evaluate` gives them."""
    from sklearn.metrics import f1_score, make_scorer

    if positive is None:
        return {"accuracy": "accuracy", "roc_auc": "roc_auc_ovr", "f1": "f1_macro"}
    return {
        "accuracy": "accuracy",
        "roc_auc": "roc_auc",
        "f1": make_scorer(f1_score, pos_label=positive, zero_division=0),
    }


def git_commit() -> str:
    if os.environ.get("MLCYCLE_GIT_COMMIT"):
        return os.environ["MLCYCLE_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _plots(model: Any, X: pd.DataFrame, y: np.ndarray, positive: int | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_estimator(model, X, y, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (hold-out)")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    if positive is None:  # one ROC curve per class would need its own figure
        return
    fig, ax = plt.subplots(figsize=(4.5, 4))
    RocCurveDisplay.from_estimator(model, X, y, pos_label=positive, ax=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_title("ROC curve (hold-out)")
    fig.tight_layout()
    fig.savefig(out / "roc_curve.png", dpi=100)
    plt.close(fig)


def _importances(model: Any) -> pd.DataFrame | None:
    names = model.named_steps["features"].get_feature_names_out()
    est = model.named_steps["model"]
    if hasattr(est, "coef_"):
        coef = np.atleast_2d(est.coef_)
        if coef.shape[0] == 1:
            return pd.DataFrame({"feature": names, "coefficient": coef.ravel()})
        return pd.DataFrame(  # multiclass: one column per class index
            {"feature": names, **{f"coefficient_{c}": coef[j] for j, c in enumerate(est.classes_)}}
        )
    if hasattr(est, "feature_importances_"):
        return pd.DataFrame({"feature": names, "importance": est.feature_importances_})
    return None


def fit(
    snapshot: Snapshot, spec: DatasetSpec, cfg: TrainConfig, engine: Engine = LOCAL
) -> tuple[
    Any,
    dict[str, Any],
    dict[str, float],
    dict[str, float],
    dict[str, float],
    tuple[pd.DataFrame, np.ndarray],
]:
    """Split, cross-validate, (grid-search,) fit and evaluate. Pure apart from CPU."""
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import (
        GridSearchCV,
        StratifiedKFold,
        cross_validate,
        train_test_split,
    )

    assert spec.target is not None
    positive = positive_class(spec)
    classes = [int(c) for c in np.unique(snapshot.y)]  # the classes the data has
    min_class = int(np.bincount(snapshot.y).min())
    if min_class < cfg.cv_folds + 1:
        raise TrainingError(
            f"the smaller class has {min_class} rows: too few for a hold-out and "
            f"{cfg.cv_folds}-fold CV (need more than {cfg.cv_folds})"
        )
    X_train, X_test, y_train, y_test = train_test_split(
        snapshot.X, snapshot.y, test_size=cfg.test_size, stratify=snapshot.y, random_state=cfg.seed
    )
    folds = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    width = encoding_footprint(snapshot.X, spec, cfg.model, available_memory())
    pipeline = build_pipeline(spec, cfg.model, cfg.seed, width)
    best: dict[str, Any] = {}
    n_jobs = engine.n_jobs
    with warnings.catch_warnings(), engine.parallel():
        warnings.simplefilter("ignore", category=UserWarning)  # e.g. unknown categories in a fold
        if cfg.search is not None:
            grid = {f"model__{k}": v for k, v in cfg.search.grid.items()}
            scoring = cfg.search.scoring
            if positive is None and scoring in ("roc_auc", "f1", "precision", "recall"):
                scoring = {"roc_auc": "roc_auc_ovr"}.get(scoring, f"{scoring}_macro")
            search = GridSearchCV(pipeline, grid, scoring=scoring, cv=folds, n_jobs=n_jobs)
            search.fit(X_train, y_train)
            best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
            pipeline = search.best_estimator_
        scores = cross_validate(
            build_pipeline(
                spec,
                cfg.model.model_copy(update={"params": {**cfg.model.params, **best}}),
                cfg.seed,
            ),
            X_train,
            y_train,
            cv=folds,
            scoring=cv_scorers(positive),
            n_jobs=n_jobs,
        )
        if cfg.search is None:
            pipeline.fit(X_train, y_train)
    cv = {}
    for metric in ("accuracy", "roc_auc", "f1"):
        vals = scores[f"test_{metric}"]
        cv[f"cv_{metric}_mean"] = float(np.mean(vals))
        cv[f"cv_{metric}_std"] = float(np.std(vals))
    metrics = evaluate(pipeline, X_test, y_test, positive, classes)
    dummy = DummyClassifier(strategy="most_frequent").fit(X_train, y_train)
    baseline = evaluate(dummy, X_test, y_test, positive, classes)
    return pipeline, best, metrics, baseline, cv, (X_test, y_test)


def positive_class(spec: DatasetSpec) -> int | None:
    """The positive label's class index (None for a multiclass target)."""
    assert spec.target is not None
    positive = spec.target.positive
    return spec.target.labels[positive] if positive is not None else None


def run_train(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store, engine: Engine = LOCAL
) -> TrainResult:
    """The training stage; see the module docstring."""
    import mlflow

    assert spec.target is not None
    client = registry.connect(settings)  # fail fast if tracking is unreachable
    snapshot = load_snapshot(store, spec, engine)
    logger.info(
        "training on %d labelled rows (data %s)", len(snapshot.ids), snapshot.data_hash[:12]
    )
    positive = positive_class(spec)
    pipeline, best, metrics, baseline, cv, (X_test, y_test) = fit(snapshot, spec, cfg, engine)
    classes = [int(c) for c in pipeline.classes_]

    name = spec.registered_model
    current = registry.champion(client, name)
    champion_before: dict[str, Any] | None = None
    contract_change: str | None = None
    if current is not None:
        theirs = current.tags.get(registry.CONTRACT_TAG)
        if theirs != spec.contract_hash:
            contract_change = (
                f"spec contract {spec.contract_hash[:12]} vs champion v{current.version}'s "
                f"{(theirs or 'none recorded')[:12]}"
            )
            champion_before = {"version": current.version, "metrics": {}}
        else:  # same contract: re-score the champion on the candidate's hold-out
            champ_metrics = _rescore(current, X_test, y_test, positive, classes)
            champion_before = {"version": current.version, "metrics": champ_metrics}

    experiment_id = registry.ensure_experiment(client, spec.experiment_name, settings)
    est_params = {
        f"model.{k}": v
        for k, v in pipeline.named_steps["model"].get_params().items()
        if isinstance(v, str | int | float | bool) or v is None
    }
    params = {
        "dataset": spec.name,
        "model.kind": cfg.model.kind,
        "seed": cfg.seed,
        "test_size": cfg.test_size,
        "cv_folds": cfg.cv_folds,
        "rows_total": len(snapshot.ids),
        "rows_train": len(snapshot.ids) - len(y_test),
        "rows_test": len(y_test),
        "features": ",".join(spec.feature_columns),
        "gate.metric": cfg.gate.metric,
        "gate.tolerance": cfg.gate.tolerance,
        "gate.min_lift": cfg.gate.min_lift,
        **est_params,
        **{f"search.best.{k}": v for k, v in best.items()},
    }
    commit = git_commit()
    tags = {
        registry.TAG + "stage": "train",
        registry.TAG + "dataset": spec.name,
        registry.TAG + "data_hash": snapshot.data_hash,
        registry.TAG + "row_count": str(len(snapshot.ids)),
        registry.TAG + "etl_batch_ids": ",".join(snapshot.batch_ids)[:4900] or "none",
        registry.TAG + "etl_batch_statuses": ",".join(
            f"{k}:{v}" for k, v in sorted(snapshot.batch_statuses.items())
        )[:4900]
        or "none",
        registry.TAG + "spec_hash": spec.fingerprint,
        registry.CONTRACT_TAG: spec.contract_hash,
        registry.TAG + "git_commit": commit,
        "mlflow.source.git.commit": commit,  # the standard tag MLflow's UI shows
        registry.TAG + "seed": str(cfg.seed),
        registry.TAG + "version": __version__,
    }
    with (
        mlflow.start_run(experiment_id=experiment_id, tags=tags) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = Path(tmp)
        mlflow.log_params(params)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in baseline.items()})
        mlflow.log_metrics(cv)
        _plots(pipeline, X_test, y_test, positive, out)
        (out / "metrics.json").write_text(
            json.dumps(
                {
                    "test": metrics,
                    "baseline": baseline,
                    "cv": cv,
                    "champion_before": champion_before,
                },
                indent=2,
            )
        )
        weights = _importances(pipeline)
        if weights is not None:
            weights.to_csv(out / "feature_weights.csv", index=False)
        (out / "train_config.json").write_text(cfg.model_dump_json(indent=2))
        (out / "dataset_spec.json").write_text(spec.model_dump_json(indent=2, exclude_none=True))
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
        log_training_input(spec, store.name, repr(store), snapshot)
        serving = _serving_bundle(pipeline, spec, snapshot, out / "serving")
        reference = _reference(pipeline, snapshot, X_test.index, spec, cfg, metrics)
        (out / "serving" / PROFILE_FILE).write_text(json.dumps(reference))
        mlflow.log_artifacts(str(out / "serving"), artifact_path="serving")
        mlflow.log_metric(
            "onnx_max_abs_diff",
            serving["onnx_max_abs_diff"] if serving["onnx_max_abs_diff"] is not None else -1,
        )
        names = {v: k for k, v in spec.target.labels.items()}
        info = log_pyfunc(
            pipeline,
            spec,
            out / "serving" / "serving.json",
            raw_example(spec, snapshot.X),
            [names[c] for c in classes],
            name,
            out,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id

    candidate: dict[str, float] = {str(cfg.gate.metric): metrics[cfg.gate.metric]}
    decision: Decision = should_promote(
        candidate,
        baseline,
        champion_before["metrics"] if champion_before else None,
        cfg.gate,
        contract_change=contract_change,
        runtime_problem=None
        if serving["runtime"] == "onnx"
        else f"no ONNX graph matching scikit-learn ({serving['onnx_note']})",
    )
    client.set_model_version_tag(name, version, registry.CONTRACT_TAG, spec.contract_hash)
    client.update_model_version(
        name,
        version,
        description=f"gate: {'promoted' if decision.promote else 'rejected'}: {decision.reason}",
    )
    client.set_model_version_tag(
        name,
        version,
        registry.TAG + "gate_decision",
        "promoted" if decision.promote else "rejected",
    )
    client.set_model_version_tag(name, version, registry.TAG + "gate_reason", decision.reason)
    client.set_model_version_tag(name, version, registry.TAG + "data_hash", snapshot.data_hash)
    client.set_model_version_tag(name, version, registry.RUNTIME_TAG, serving["runtime"])
    if decision.promote:
        registry.set_champion(client, name, version, current.version if current else None)
    after = registry.champion(client, name)
    return TrainResult(
        run_id=run_id,
        run_url=_run_url(settings, experiment_id, run_id),
        model_name=name,
        version=version,
        rows=len(snapshot.ids),
        data_hash=snapshot.data_hash,
        metrics=metrics,
        baseline=baseline,
        cv=cv,
        champion_before=champion_before,
        decision={
            "promote": decision.promote,
            "reason": decision.reason,
            "metric": cfg.gate.metric,
        },
        champion_after=after.version if after else None,
        params=params,
    )


def _serving_bundle(
    pipeline: Any, spec: DatasetSpec, snapshot: Snapshot, folder: Path
) -> dict[str, Any]:
    """What the serving stage loads: the ONNX graph (when it matches scikit-learn) and a
    small JSON describing inputs, labels and the spec used to validate requests."""
    assert spec.target is not None
    folder.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(pipeline, spec, snapshot.X)
    fold_note = "no graph"
    if exported.usable and exported.model is not None:
        (folder / "model.onnx").write_bytes(exported.model)
        fold, fold_note = fold_linear(pipeline, exported.serving, spec, snapshot.X, exported.fill)
        if fold is not None:
            (folder / LINEAR_FILE).write_text(json.dumps(fold))
    meta = {
        "format": 2,
        "runtime": "onnx" if exported.usable else "sklearn",
        "onnx_max_abs_diff": exported.max_abs_diff,
        "onnx_note": exported.reason,
        "linear_note": fold_note,
        "numeric": spec.numeric_features,
        "categorical": spec.categorical_features,
        "missing": MISSING,
        "fill": exported.fill,
        "classes": [int(c) for c in pipeline.classes_],
        "labels": spec.target.labels,
        "positive": spec.target.positive,
        "data_hash": snapshot.data_hash,
        "spec": spec.model_dump(mode="json", exclude_none=True),
    }
    (folder / "serving.json").write_text(json.dumps(meta, indent=2))
    (folder / "example.json").write_text(json.dumps(_reference_batch(pipeline, snapshot)))
    logger.info("serving runtime: %s (%s; %s)", meta["runtime"], exported.reason, fold_note)
    return meta


def _reference(
    pipeline: Any,
    snapshot: Snapshot,
    test_index: pd.Index,
    spec: DatasetSpec,
    cfg: TrainConfig,
    validation: dict[str, float],
) -> dict[str, Any]:
    """The monitoring reference: the profile of the training part (hold-out excluded)
    and the model's scores on it."""
    assert spec.target is not None
    train_mask = ~snapshot.X.index.isin(test_index)
    X_train = snapshot.X[train_mask]
    classes = list(pipeline.classes_)
    positive = positive_class(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        proba = pipeline.predict_proba(X_train)
    # the score monitoring follows: the positive probability, or the top class's
    scores = proba[:, classes.index(positive)] if positive is not None else proba.max(axis=1)
    names = {v: k for k, v in spec.target.labels.items()}
    predicted = np.asarray([names[int(c)] for c in classes], dtype=object)[proba.argmax(axis=1)]
    return reference_profile(
        X_train,
        snapshot.y[train_mask],
        scores,
        spec,
        validation,
        snapshot.data_hash,
        bins=cfg.monitor.bins,
        seed=cfg.seed,
        predicted=predicted,
    )


REFERENCE_ROWS = 20


def _reference_batch(pipeline: Any, snapshot: Snapshot) -> dict[str, Any]:
    """Training rows and the probabilities scikit-learn gives them: a server scores them
    with a candidate before swapping it in, and refuses a model that cannot."""
    rows = snapshot.X.head(REFERENCE_ROWS)
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
        for rec in rows.to_dict("records")
    ]
    probs = pipeline.predict_proba(rows)
    return {"records": records, "class_probabilities": probs.tolist()}


def _rescore(
    current: registry.VersionInfo,
    X: pd.DataFrame,
    y: np.ndarray,
    positive: int | None,
    classes: list[int],
) -> dict[str, float]:
    """The champion's metrics on the candidate's hold-out, so both are judged on the same
    rows; falls back to its logged metrics if it cannot be loaded."""
    try:
        model = load_pipeline(f"models:/{current.name}/{current.version}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            return evaluate(model, X, y, positive, classes)
    except Exception as err:  # a broken or foreign model must not block training
        logger.warning(
            "could not re-score champion v%s (%s); using its logged metrics", current.version, err
        )
        return {
            k.removeprefix("test_"): v for k, v in current.metrics.items() if k.startswith("test_")
        }


def _run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} (view with: mlflow ui --backend-store-uri {uri})"
