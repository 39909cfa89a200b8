"""How a model is measured: hold-out metrics with the meanings the gate and the reports
use, and the CV scorers with the same meanings (`judge` compares two models with them)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.spec import DatasetSpec

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


def positive_class(spec: DatasetSpec) -> int | None:
    """The positive label's class index (None for a multiclass target)."""
    assert spec.target is not None
    positive = spec.target.positive
    return spec.target.labels[positive] if positive is not None else None


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
