"""Steps 2 and 3 of training: split (a stratified hold-out, folds for CV) and fit (an
optional grid search, k-fold CV, the final fit, hold-out metrics next to a majority-class
baseline). Pure apart from CPU; on the dask engine joblib's tasks run on the cluster."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.engine import LOCAL, Engine
from mlcycle.errors import TrainingError
from mlcycle.spec import DatasetSpec
from mlcycle.train.config import TrainConfig
from mlcycle.train.evaluation import cv_scorers, evaluate, positive_class
from mlcycle.train.features import available_memory, build_pipeline, encoding_footprint
from mlcycle.train.lean import fit_pipeline
from mlcycle.train.snapshot import Snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """The hold-out and the training part, and the CV folds over the training part.
    The training part stays rows of `X` (`train_rows`): on millions of rows a copy of
    them would sit beside every fit."""

    X: pd.DataFrame
    train_rows: np.ndarray
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    folds: Any

    @property
    def X_train(self) -> pd.DataFrame:  # noqa: N802 - scikit-learn's name for it
        """The training part's rows (a copy each time)."""
        return self.X.iloc[self.train_rows]


@dataclass
class FitResult:
    """A fitted candidate and how it did."""

    pipeline: Any
    best_params: dict[str, Any]
    """The grid search's choice (empty without a search)."""
    metrics: dict[str, float]
    """Hold-out metrics (`mlcycle.train.evaluation.evaluate`)."""
    baseline: dict[str, float]
    """The majority-class baseline's on the same hold-out."""
    cv: dict[str, float]
    """Mean and spread of each CV metric on the training part."""
    split: Split
    classes: list[int] = field(default_factory=list)
    fairness: dict[str, Any] = field(default_factory=dict)
    """Per sensitive column on the hold-out: groups and disparities (`train.fairness`)."""

    @property
    def x_test(self) -> pd.DataFrame:
        return self.split.X_test

    @property
    def y_test(self) -> np.ndarray:
        return self.split.y_test


def held_out(cfg: TrainConfig, rows: int) -> TrainConfig:
    """The config with the hold-out fraction this table is split at (`for_rows`); says
    so when `holdout_max_rows` makes it smaller than `test_size`."""
    found = cfg.for_rows(rows)
    if found.test_size != cfg.test_size:
        logger.info(
            "hold-out: test_size %g would hold out about %s of %s rows, over "
            "holdout_max_rows %s: the rows below %g are held out",
            cfg.test_size,
            f"{round(rows * cfg.test_size):,}",
            f"{rows:,}",
            f"{cfg.holdout_max_rows:,}",
            found.test_size,
        )
    return found


def split(snapshot: Snapshot, cfg: TrainConfig, names: dict[int, str] | None = None) -> Split:
    """The stable hold-out (`mlcycle.train.holdout`: the rows whose id hashes below
    `cfg.test_size`) and `cfg.cv_folds` stratified, seeded folds over the rest: the same
    rows give the same split, and a row stays on its side as the data grows."""
    from sklearn.model_selection import StratifiedKFold

    held = snapshot.positions < cfg.test_size
    classes = int(snapshot.y.max()) + 1
    check_sides(
        np.bincount(snapshot.y[held], minlength=classes),
        np.bincount(snapshot.y[~held], minlength=classes),
        cfg,
        names or {},
    )
    folds = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    train_rows = np.flatnonzero(~held)
    return Split(
        snapshot.X, train_rows, snapshot.X[held], snapshot.y[~held], snapshot.y[held], folds
    )


def check_sides(
    held: np.ndarray,
    train: np.ndarray,
    cfg: TrainConfig,
    names: dict[int, str],
    folds: bool = True,
) -> None:
    """TrainingError naming the classes the hold-out (`held`: rows per class) or the
    training part (`train`) has too few rows of: one each, and `cv_folds` + 1 in the
    training part for CV (`folds`)."""
    present = np.flatnonzero(held + train)
    total = int(held.sum() + train.sum())
    for part, counts in (("hold-out", held), ("training part", train)):
        need = cfg.cv_folds + 1 if part == "training part" and folds else 1
        short = [c for c in present if counts[c] < need]
        if short:
            which = ", ".join(f"{names.get(int(c), int(c))!r} ({counts[c]})" for c in short)
            raise TrainingError(
                f"the {part} ({int(counts.sum())} of {total} rows; the hold-out is "
                f"the rows whose id hashes below test_size {cfg.test_size:g}) has too few "
                f"rows of class {which}: need at least {need} each"
                + (f" for {cfg.cv_folds}-fold CV" if part != "hold-out" and folds else "")
                + "; load more labelled rows or change test_size"
            )


def _search(
    pipeline: Any, part: Split, cfg: TrainConfig, positive: int | None, n_jobs: int
) -> tuple[Any, dict[str, Any]]:
    """The config's grid search over the pipeline: the best estimator and its params."""
    from sklearn.model_selection import GridSearchCV

    assert cfg.search is not None
    grid = {f"model__{k}": v for k, v in cfg.search.grid.items()}
    scoring = cfg.search.scoring
    if positive is None and scoring in ("roc_auc", "f1", "precision", "recall"):
        scoring = {"roc_auc": "roc_auc_ovr"}.get(scoring, f"{scoring}_macro")
    search = GridSearchCV(pipeline, grid, scoring=scoring, cv=part.folds, n_jobs=n_jobs)
    search.fit(part.X_train, part.y_train)
    best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
    return search.best_estimator_, best


def _cross_validate(
    spec: DatasetSpec,
    cfg: TrainConfig,
    best: dict[str, Any],
    part: Split,
    positive: int | None,
    n_jobs: int,
) -> dict[str, float]:
    """Each fold fitted (`lean.fit_pipeline`) and scored as `cross_validate` would: the
    same folds, fits and scorers, a failed fold scoring NaN."""
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.metrics import check_scoring

    model = cfg.model.model_copy(update={"params": {**cfg.model.params, **best}})
    template = build_pipeline(spec, model, cfg.seed)
    scorer = check_scoring(template, scoring=cv_scorers(positive))
    y = part.y_train
    folds = part.folds.split(np.zeros((len(y), 1)), y)
    found = Parallel(n_jobs=n_jobs)(
        delayed(_fold)(clone(template), part.X, part.train_rows, y, train, test, scorer)
        for train, test in folds
    )
    cv = {}
    for metric in ("accuracy", "roc_auc", "f1"):
        vals = np.asarray([scores.get(metric, np.nan) for scores in found])
        cv[f"cv_{metric}_mean"] = float(np.mean(vals))
        cv[f"cv_{metric}_std"] = float(np.std(vals))
    return cv


def _fold(
    pipeline: Any,
    X: pd.DataFrame,
    rows: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    scorer: Any,
) -> dict[str, float]:
    """One CV fold's scores ({} when its fit failed, as `error_score=nan` would)."""
    try:
        fit_pipeline(pipeline, X, rows[train], y[train])
    except Exception as err:  # one fold's failure is a NaN score, not the run's end
        logger.warning("a CV fold failed to fit (its scores are NaN): %s", err)
        return {}
    return {k: float(v) for k, v in scorer(pipeline, X.iloc[rows[test]], y[test]).items()}


def fit(
    snapshot: Snapshot, spec: DatasetSpec, cfg: TrainConfig, engine: Engine = LOCAL
) -> FitResult:
    """Split, (grid-search,) cross-validate, fit and evaluate."""
    from sklearn.dummy import DummyClassifier

    assert spec.target is not None
    positive = positive_class(spec)
    classes = [int(c) for c in np.unique(snapshot.y)]  # the classes the data has
    names = {v: k for k, v in spec.target.labels.items()}
    part = split(snapshot, cfg, names)
    width = encoding_footprint(snapshot.X, spec, cfg.model, available_memory())
    pipeline = build_pipeline(spec, cfg.model, cfg.seed, width)
    best: dict[str, Any] = {}
    with warnings.catch_warnings(), engine.parallel():
        warnings.simplefilter("ignore", category=UserWarning)  # e.g. unknown categories in a fold
        if cfg.search is not None:
            pipeline, best = _search(pipeline, part, cfg, positive, engine.n_jobs)
        cv = _cross_validate(spec, cfg, best, part, positive, engine.n_jobs)
        if cfg.search is None:
            fit_pipeline(pipeline, part.X, part.train_rows, part.y_train)
    metrics = evaluate(pipeline, part.X_test, part.y_test, positive, classes)
    dummy = DummyClassifier(strategy="most_frequent").fit(
        np.zeros((len(part.y_train), 1)), part.y_train
    )
    baseline = evaluate(dummy, part.X_test, part.y_test, positive, classes)
    return FitResult(pipeline, best, metrics, baseline, cv, part, classes)
