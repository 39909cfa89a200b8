"""Step 5 of training: export. The serving bundle (`mlcycle.bundle`): the ONNX graph when
it matches scikit-learn, a linear model's fold, the reference batch the server checks a
candidate with, and the monitoring reference profile."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.bundle import ServingMeta, write_bundle
from mlcycle.monitor.profile import reference_profile
from mlcycle.spec import DatasetSpec
from mlcycle.train.config import TrainConfig
from mlcycle.train.evaluation import positive_class
from mlcycle.train.export import PARITY_ROWS, export_onnx
from mlcycle.train.features import MISSING
from mlcycle.train.linear import fold_linear
from mlcycle.train.snapshot import Snapshot
from mlcycle.train.trees import explanation_tables

logger = logging.getLogger(__name__)


def serving_bundle(
    pipeline: Any, spec: DatasetSpec, snapshot: Snapshot, folder: Path
) -> ServingMeta:
    """What the serving stage loads: the ONNX graph (when it matches scikit-learn) and a
    small JSON describing inputs, labels and the spec used to validate requests."""
    assert spec.target is not None
    exported = export_onnx(pipeline, spec, snapshot.X)
    fold, fold_note = None, "no graph"
    trees, explain_note = None, "no graph"
    if exported.usable and exported.model is not None:
        fold, fold_note = fold_linear(pipeline, exported.serving, spec, snapshot.X, exported.fill)
        trees, explain_note = tree_tables(exported.serving, spec, fold is not None)
    meta = ServingMeta(
        runtime="onnx" if exported.usable else "sklearn",
        onnx_max_abs_diff=exported.max_abs_diff,
        onnx_note=exported.reason,
        linear_note=fold_note,
        explain_note=explain_note,
        numeric=spec.numeric_features,
        categorical=spec.categorical_features,
        missing=MISSING,
        fill=exported.fill,
        classes=[int(c) for c in pipeline.classes_],
        labels=spec.target.labels,
        positive=spec.target.positive,
        data_hash=snapshot.data_hash,
        spec=spec.model_dump(mode="json", exclude_none=True),
    )
    write_bundle(
        folder,
        meta,
        graph=exported.model if exported.usable else None,
        linear=fold,
        example=reference_batch(pipeline, snapshot),
        trees=trees,
    )
    logger.info("serving runtime: %s (%s; %s)", meta.runtime, exported.reason, fold_note)
    return meta


TREE_TABLES_MAX = 64 * 2**20
"""Bytes of explanation tables past which a tree model's bundle carries none (its
explanations are then refused, saying so)."""


def tree_tables(
    serving: Any, spec: DatasetSpec, folded: bool
) -> tuple[dict[str, np.ndarray] | None, str]:
    """A tree model's explanation tables and how its scores are explained (or why not)."""
    if folded:
        return None, "exact: the linear fold's terms less their training means"
    tables = explanation_tables(serving, spec)
    if tables is None:
        kind = type(serving.named_steps["model"]).__name__
        return None, f"none: {kind} is neither linear nor a tree ensemble"
    size = sum(int(v.nbytes) for v in tables.values())
    leaves, depth = tables["feature"].shape
    if size > TREE_TABLES_MAX:
        return None, (
            f"none: the ensemble's {leaves:,} leaves (paths of up to {depth} features) need "
            f"{size / 2**20:,.0f} MiB of tables, more than {TREE_TABLES_MAX / 2**20:.0f} MiB: "
            "limit max_depth or max_leaf_nodes to explain it"
        )
    return tables, (
        f"exact TreeSHAP (path-dependent) over {leaves:,} leaves, adding up to the "
        f"{str(tables['raw']).replace('_', '-')}"
    )


def reference(
    pipeline: Any,
    snapshot: Snapshot,
    test_index: pd.Index,
    spec: DatasetSpec,
    cfg: TrainConfig,
    validation: dict[str, float],
) -> dict[str, Any]:
    """The monitoring reference (`bundle.write_profile` stores it): the profile of the
    training part (hold-out excluded) and the model's scores on it."""
    assert spec.target is not None
    train_mask = ~snapshot.X.index.isin(test_index)
    X_train = snapshot.X[train_mask]
    classes = list(pipeline.classes_)
    positive = positive_class(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        proba = block_proba(pipeline, X_train)
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


def block_proba(pipeline: Any, X: pd.DataFrame) -> np.ndarray:
    """`pipeline.predict_proba(X)` a block of rows at a time: on millions of rows the
    whole frame's transform would be the run's peak memory."""
    if len(X) <= PARITY_ROWS:
        return np.asarray(pipeline.predict_proba(X))
    parts = [
        pipeline.predict_proba(X.iloc[start : start + PARITY_ROWS])
        for start in range(0, len(X), PARITY_ROWS)
    ]
    return np.concatenate(parts)


REFERENCE_ROWS = 20


def reference_batch(pipeline: Any, snapshot: Snapshot) -> dict[str, Any]:
    """Training rows and the probabilities scikit-learn gives them: a server scores them
    with a candidate before swapping it in, and refuses a model that cannot."""
    rows = snapshot.X.head(REFERENCE_ROWS)
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
        for rec in rows.to_dict("records")
    ]
    probs = pipeline.predict_proba(rows)
    return {"records": records, "class_probabilities": probs.tolist()}
