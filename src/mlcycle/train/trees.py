"""A tree model's explanation tables for the bundle (`trees.npz`): the leaf tables of
`mlcycle.treeshap` and the encoding that turns a request's columns into the numbers the
trees compare (the spec pipeline's scaling and one-hot columns, without scikit-learn).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlcycle.spec import DatasetSpec
from mlcycle.treeshap import leaf_tables


def is_lightgbm(est: Any) -> bool:
    return hasattr(est, "booster_")


def lightgbm_trees(est: Any) -> tuple[list[tuple[int, dict[str, np.ndarray]]], int]:
    """A fitted LightGBM classifier's trees as flat node tables (node 0 the root, -1 for
    a leaf's children; a row goes left when `x <= threshold`), each with the output it
    adds to, and the trees a boosting round makes (1 for two classes). Thresholds and
    leaf values are LightGBM's doubles; covers are its training row counts, which its
    own TreeSHAP uses."""
    model = est.booster_.dump_model()
    per_iter = int(model["num_tree_per_iteration"])
    out: list[tuple[int, dict[str, np.ndarray]]] = []
    for info in model["tree_info"]:
        table: dict[str, list[Any]] = {
            k: [] for k in ("left", "right", "feature", "threshold", "cover", "leaf")
        }
        stack = [(info["tree_structure"], -1, False)]
        while stack:  # depth-first, parents before children
            node, parent, is_right = stack.pop()
            me = len(table["left"])
            if parent >= 0:
                table["right" if is_right else "left"][parent] = me
            leaf = "leaf_value" in node
            if not leaf and node.get("decision_type", "<=") != "<=":
                raise ValueError(f"LightGBM split {node['decision_type']!r} is not supported")
            table["left"].append(-1)
            table["right"].append(-1)
            table["feature"].append(-2 if leaf else int(node["split_feature"]))
            table["threshold"].append(0.0 if leaf else float(node["threshold"]))
            table["cover"].append(float(node.get("leaf_count" if leaf else "internal_count", 0)))
            table["leaf"].append(float(node["leaf_value"]) if leaf else 0.0)
            if not leaf:
                stack.append((node["right_child"], me, True))
                stack.append((node["left_child"], me, False))
        arrays = {k: np.asarray(v) for k, v in table.items()}
        arrays["left"] = arrays["left"].astype(np.int64)
        arrays["right"] = arrays["right"].astype(np.int64)
        arrays["feature"] = arrays["feature"].astype(np.int64)
        out.append((int(info["tree_index"]) % per_iter, arrays))
    return out, per_iter


def ensemble_trees(est: Any) -> tuple[list[dict[str, np.ndarray]], int, np.ndarray, str]:
    """(trees, outputs, base offset, raw score) of a fitted forest, histogram gradient
    boosting or LightGBM: what each tree adds to each output, as
    `treeshap.leaf_tables` takes them. A forest's raw score is the mean of its trees'
    class shares (a probability per class); boosting's is the baseline plus its trees'
    values (log-odds, or one score per class before the softmax)."""
    trees: list[dict[str, np.ndarray]] = []
    if is_lightgbm(est):
        flat, per_iter = lightgbm_trees(est)
        for class_id, t in flat:
            value = np.zeros((len(t["leaf"]), per_iter))
            value[:, class_id] = t["leaf"]
            trees.append({**{k: t[k] for k in t if k != "leaf"}, "value": value})
        return trees, per_iter, np.zeros(per_iter), "log_odds" if per_iter == 1 else "scores"
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
    if not (hasattr(est, "estimators_") or hasattr(est, "_predictors") or is_lightgbm(est)):
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
