"""A tree model's explanation tables for the bundle (`trees.npz`): the leaf tables of
`mlcycle.treeshap` and the encoding that turns a request's columns into the numbers the
trees compare (the spec pipeline's scaling and one-hot columns, without scikit-learn).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlcycle.spec import DatasetSpec
from mlcycle.treeshap import leaf_tables


def ensemble_trees(est: Any) -> tuple[list[dict[str, np.ndarray]], int, np.ndarray, str]:
    """(trees, outputs, base offset, raw score) of a fitted forest or histogram gradient
    boosting: what each tree adds to each output, as `treeshap.leaf_tables` takes them.
    A forest's raw score is the mean of its trees' class shares (a probability per
    class); boosting's is the baseline plus its trees' values (log-odds, or one score
    per class before the softmax)."""
    trees: list[dict[str, np.ndarray]] = []
    if hasattr(est, "estimators_"):
        share = 1.0 / len(est.estimators_)
        for tree in est.estimators_:
            t = tree.tree_
            value = t.value[:, 0, :]
            value = value / np.maximum(value.sum(axis=1, keepdims=True), 1e-300)
            trees.append(
                {
                    "left": t.children_left,
                    "right": t.children_right,
                    "feature": t.feature,
                    "threshold": t.threshold,
                    "cover": t.weighted_n_node_samples,
                    "value": value * share,
                }
            )
        return trees, len(est.classes_), np.zeros(len(est.classes_)), "probability"
    per_iter = est.n_trees_per_iteration_
    for predictors in est._predictors:
        for class_id, predictor in enumerate(predictors):
            n = predictor.nodes
            value = np.zeros((len(n), per_iter))
            value[:, class_id] = n["value"]
            trees.append(
                {
                    "left": np.where(n["is_leaf"], -1, n["left"].astype(np.int64)),
                    "right": np.where(n["is_leaf"], -1, n["right"].astype(np.int64)),
                    "feature": n["feature_idx"].astype(np.int64),
                    "threshold": n["num_threshold"].astype(np.float64),
                    "cover": n["count"].astype(np.float64),
                    "value": value,
                }
            )
    base = np.asarray(est._baseline_prediction, dtype=np.float64).ravel()[:per_iter]
    return trees, per_iter, base, "log_odds" if per_iter == 1 else "scores"


def explanation_tables(serving: Any, spec: DatasetSpec) -> dict[str, np.ndarray] | None:
    """The bundle's `trees.npz` for a tree model's serving pipeline (its imputers taken
    out: the adapter imputes), None for other kinds."""
    est = serving.named_steps["model"]
    if not (hasattr(est, "estimators_") or hasattr(est, "_predictors")):
        return None
    ct = serving.named_steps["features"]
    names = spec.numeric_features + spec.categorical_features
    groups: list[int] = []
    numeric: list[bool] = []
    mean: list[float] = []
    scale: list[float] = []
    values: list[str] = []
    for name, pipe, columns in ct.transformers_:
        if name == "num" and len(columns):
            scaler = pipe.named_steps["scale"]
            groups += [names.index(c) for c in columns]
            numeric += [True] * len(columns)
            mean += [float(v) for v in scaler.mean_]
            scale += [float(v) for v in scaler.scale_]
            values += [""] * len(columns)
        elif name == "cat" and len(columns):
            for column, cats in zip(columns, pipe.named_steps["onehot"].categories_, strict=True):
                groups += [names.index(column)] * len(cats)
                numeric += [False] * len(cats)
                mean += [0.0] * len(cats)
                scale += [1.0] * len(cats)
                values += [str(c) for c in cats]
    trees, outputs, base, raw = ensemble_trees(est)
    tables = leaf_tables(trees, outputs)
    tables["expected"] = tables["expected"] + base
    return {
        **tables,
        "groups": np.asarray(groups, dtype=np.int64),
        "names": np.asarray(names, dtype=np.str_),
        "numeric": np.asarray(numeric, dtype=bool),
        "mean": np.asarray(mean, dtype=np.float64),
        "scale": np.asarray(scale, dtype=np.float64),
        "cat_values": np.asarray(values, dtype=np.str_),
        "float32": np.asarray(hasattr(est, "estimators_")),
        "raw": np.asarray(raw, dtype=np.str_),
    }
