"""Step 6 of training: the MLflow run's record. Params, lineage tags, the evaluation
artifacts (metrics, plots, weights, the config and spec used) and the run's URL."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import __version__, registry
from mlcycle.config import Settings
from mlcycle.spec import DatasetSpec
from mlcycle.train.config import TrainConfig
from mlcycle.train.fitting import FitResult
from mlcycle.train.snapshot import Snapshot


def git_commit(settings: Settings) -> str:
    """The commit the run records: MLCYCLE_GIT_COMMIT, else the working tree's HEAD."""
    if settings.git_commit:
        return settings.git_commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_params(
    spec: DatasetSpec, cfg: TrainConfig, snapshot: Snapshot, fitted: FitResult
) -> dict[str, Any]:
    est_params = {
        f"model.{k}": v
        for k, v in fitted.pipeline.named_steps["model"].get_params().items()
        if isinstance(v, str | int | float | bool) or v is None
    }
    rows_test = len(fitted.y_test)
    return {
        "dataset": spec.name,
        "model.kind": cfg.model.kind,
        "seed": cfg.seed,
        "test_size": cfg.test_size,
        "holdout_max_rows": cfg.holdout_max_rows,
        "cv_folds": cfg.cv_folds,
        "rows_total": snapshot.rows,
        "rows_train": snapshot.rows - rows_test,
        "rows_test": rows_test,
        "features": ",".join(spec.feature_columns),
        "gate.metric": cfg.gate.metric,
        "gate.tolerance": cfg.gate.tolerance,
        "gate.min_lift": cfg.gate.min_lift,
        **est_params,
        **{f"search.best.{k}": v for k, v in fitted.best_params.items()},
    }


def run_tags(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, snapshot: Snapshot
) -> dict[str, str]:
    """Lineage: the data (hash, rows, ETL batches), the spec, the code and the seed."""
    commit = git_commit(settings)
    statuses = ",".join(f"{k}:{v}" for k, v in sorted(snapshot.batch_statuses.items()))
    return {
        registry.TAG + "stage": "train",
        registry.TAG + "dataset": spec.name,
        registry.TAG + "data_hash": snapshot.data_hash,
        registry.TAG + "row_count": str(snapshot.rows),
        registry.TAG + "etl_batch_ids": ",".join(snapshot.batch_ids)[:4900] or "none",
        registry.TAG + "etl_batch_statuses": statuses[:4900] or "none",
        registry.TAG + "spec_hash": spec.fingerprint,
        registry.CONTRACT_TAG: spec.contract_hash,
        registry.TAG + "git_commit": commit,
        "mlflow.source.git.commit": commit,  # the standard tag MLflow's UI shows
        registry.TAG + "seed": str(cfg.seed),
        registry.TAG + "version": __version__,
    }


def write_evaluation(
    out: Path,
    spec: DatasetSpec,
    cfg: TrainConfig,
    fitted: FitResult,
    judged: dict[str, Any],
) -> None:
    """The run's `evaluation/` artifacts, written into `out`: `metrics.json` holds the
    hold-out, baseline and CV metrics and `judged`, the gate's evidence (the evaluation
    set and both models' metrics on it)."""
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "test": fitted.metrics,
                "baseline": fitted.baseline,
                "cv": fitted.cv,
                "judged": judged,
            },
            indent=2,
        )
    )
    _plots(fitted, spec, out)
    weights = importances(fitted.pipeline)
    if weights is not None:
        weights.to_csv(out / "feature_weights.csv", index=False)
    (out / "train_config.json").write_text(cfg.model_dump_json(indent=2))
    (out / "dataset_spec.json").write_text(spec.model_dump_json(indent=2, exclude_none=True))


def _plots(fitted: FitResult, spec: DatasetSpec, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    from mlcycle.train.evaluation import positive_class

    model, X, y = fitted.pipeline, fitted.x_test, fitted.y_test
    positive = positive_class(spec)
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


def importances(model: Any) -> pd.DataFrame | None:
    """Coefficients (linear models) or feature importances (trees), per encoded feature."""
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


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str | None:
    """The run's page on the tracking server; None for a local store (no server)."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def run_view(settings: Settings) -> str | None:
    """How to look at a local store's runs (no server to link to)."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {uri}"
