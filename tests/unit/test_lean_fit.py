"""The lean fit (`train.lean.fit_pipeline`) and the CV built on it give what
scikit-learn's `Pipeline.fit` and `cross_validate` give, to the last bit: the same
pickled pipeline, the same CV scores; and when the lean way cannot give the same (a
column empty in the training rows), the usual fit does."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import cross_validate

from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train import lean
from mlcycle.train.config import ModelConfig, TrainConfig
from mlcycle.train.evaluation import cv_scorers, positive_class
from mlcycle.train.features import build_pipeline
from mlcycle.train.fitting import _cross_validate, split
from mlcycle.train.snapshot import load_snapshot

KINDS = {
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 20},
    "random_forest": {"n_estimators": 8, "max_depth": 6},
    "lightgbm": {"n_estimators": 15, "num_leaves": 7},
}


def _pair(spec: DatasetSpec, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray, kind: str):
    model = ModelConfig.model_validate({"kind": kind, "params": KINDS[kind]})
    usual = build_pipeline(spec, model, 42).fit(X.iloc[rows], y[rows])
    mine = lean.fit_pipeline(build_pipeline(spec, model, 42), X, rows, y[rows])
    return usual, mine


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_lean_fit_is_the_usual_fit_to_the_byte(
    spec: DatasetSpec, loan_store: Store, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lean, "BLOCK_ROWS", 37)  # many blocks, the last one short
    snap = load_snapshot(loan_store, spec)
    rows = np.flatnonzero(snap.positions >= 0.2)
    usual, mine = _pair(spec, snap.X, snap.y, rows, kind)
    assert pickle.dumps(mine) == pickle.dumps(usual)
    held = snap.X[snap.positions < 0.2]
    assert np.array_equal(mine.predict_proba(held), usual.predict_proba(held))


def test_a_category_seen_once_and_a_column_empty_in_the_rows_fit_as_usual(
    spec: DatasetSpec, loan_store: Store
) -> None:
    snap = load_snapshot(loan_store, spec)
    X = snap.X.copy()
    rows = np.flatnonzero(snap.positions >= 0.2)
    X.loc[X.index[rows[-1]], "Property_Area"] = "Harbour"  # the last training row only
    usual, mine = _pair(spec, X, snap.y, rows, "logistic_regression")
    assert pickle.dumps(mine) == pickle.dumps(usual)
    assert "Harbour" in mine.named_steps["features"].named_transformers_["cat"][-1].categories_[5]
    X.loc[X.index[rows], "LoanAmount"] = np.nan  # no value in the training rows
    usual, mine = _pair(spec, X, snap.y, rows, "logistic_regression")
    assert pickle.dumps(mine) == pickle.dumps(usual)


def test_the_cv_scores_are_cross_validates(spec: DatasetSpec, loan_store: Store) -> None:
    snap = load_snapshot(loan_store, spec)
    cfg = TrainConfig()
    part = split(snap, cfg)
    positive = positive_class(spec)
    mine = _cross_validate(spec, cfg, {}, part, positive, 1)
    scores = cross_validate(
        build_pipeline(spec, cfg.model, cfg.seed),
        part.X_train,
        part.y_train,
        cv=part.folds,
        scoring=cv_scorers(positive),
    )
    for metric in ("accuracy", "roc_auc", "f1"):
        assert mine[f"cv_{metric}_mean"] == float(np.mean(scores[f"test_{metric}"]))
        assert mine[f"cv_{metric}_std"] == float(np.std(scores[f"test_{metric}"]))
