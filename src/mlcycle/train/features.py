"""Feature engineering inside one sklearn Pipeline built from the dataset spec.

Imputation, one-hot encoding and scaling are fitted on the training split only and are
logged with the model, so serving takes the raw columns a client sends and nothing
leaks from the evaluation split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlcycle.spec import DatasetSpec, value_text
from mlcycle.train.config import ModelConfig

MISSING = "__missing__"


def estimator(cfg: ModelConfig, seed: int) -> ClassifierMixin:
    params: dict[str, Any] = dict(cfg.params)
    if cfg.kind == "logistic_regression":
        return LogisticRegression(random_state=seed, **params)
    if cfg.kind == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=seed, **params)
    if cfg.kind == "random_forest":
        return RandomForestClassifier(random_state=seed, **params)
    if cfg.kind == "lightgbm":
        return lightgbm_classifier(seed, params)
    return DummyClassifier(strategy="most_frequent", **params)


LIGHTGBM_DEFAULTS: dict[str, Any] = {"deterministic": True, "force_col_wise": True, "verbose": -1}
"""The same data and seed give the same trees (LightGBM's own switches for that), and it
keeps quiet: its messages are not the run's."""


def lightgbm_classifier(seed: int, params: dict[str, Any]) -> ClassifierMixin:
    """LightGBM's scikit-learn classifier (the `boost` extra), seeded and deterministic."""
    from mlcycle.errors import TrainingError

    try:
        from lightgbm import LGBMClassifier
    except ImportError as err:  # pragma: no cover - the dev install has it
        raise TrainingError(
            "model kind lightgbm needs LightGBM: pip install 'mlcycle[boost]' (the project "
            "virtualenv made by `make install` has it)"
        ) from err
    made: ClassifierMixin = LGBMClassifier(random_state=seed, **{**LIGHTGBM_DEFAULTS, **params})
    return made


SPARSE_WIDTH = 1_000
"""One-hot columns past which a model kind that takes sparse input gets them sparse."""
SPARSE_KINDS = ("logistic_regression", "random_forest")


def preprocessor(spec: DatasetSpec, sparse: bool = False) -> ColumnTransformer:
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse)),
        ]
    )
    return ColumnTransformer(
        [
            ("num", numeric, spec.numeric_features),
            ("cat", categorical, spec.categorical_features),
        ],
        remainder="drop",
        verbose_feature_names_out=True,
    )


def build_pipeline(
    spec: DatasetSpec, cfg: ModelConfig, seed: int, onehot_width: int = 0
) -> Pipeline:
    """The spec's pipeline; with `onehot_width` (the columns one-hot encoding will make)
    past SPARSE_WIDTH, the encoding is sparse for the kinds that take sparse input."""
    sparse = onehot_width > SPARSE_WIDTH and cfg.kind in SPARSE_KINDS
    return Pipeline([("features", preprocessor(spec, sparse)), ("model", estimator(cfg, seed))])


def encoding_footprint(
    X: pd.DataFrame, spec: DatasetSpec, cfg: ModelConfig, available: int | None
) -> int:
    """The one-hot width of `X`; raises TrainingError, naming the widest columns and their
    distinct values, when encoding them densely would not fit in `available` bytes (a
    training fold holds ~3 copies of the encoded matrix)."""
    from mlcycle.errors import TrainingError

    distinct = {name: int(X[name].nunique(dropna=True)) + 1 for name in spec.categorical_features}
    width = sum(distinct.values())
    dense = not (width > SPARSE_WIDTH and cfg.kind in SPARSE_KINDS)
    need = 3 * len(X) * (width + len(spec.numeric_features)) * 8
    if dense and available is not None and need > available:
        widest = sorted(distinct.items(), key=lambda kv: -kv[1])[:3]
        named = ", ".join(f"{name} ({n - 1:,} distinct values)" for name, n in widest)
        raise TrainingError(
            f"one-hot encoding {named} densely needs ~{need / 2**30:.1f} GiB for "
            f"{len(X):,} rows, more than the {available / 2**30:.1f} GiB available: use a model "
            f"kind that takes sparse input ({', '.join(SPARSE_KINDS)}), or leave the column "
            "out of the spec's `features`"
        )
    return width


def available_memory() -> int | None:
    """Bytes of memory this process may still take (Linux: MemAvailable, bounded by a
    container's cgroup limit), None where unknown."""
    from pathlib import Path

    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def model_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The feature columns in model input form: numbers as float64 (NaN when missing),
    categories and booleans as their canonical text (NaN when missing), in spec order:
    the same text the API's validator gives the serving runtime ("true", not "True")."""
    out = {}
    for name in spec.numeric_features:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in spec.categorical_features:
        col = frame[name].astype(object)
        out[name] = col.where(col.notna(), np.nan).map(
            lambda v: v if isinstance(v, float) and np.isnan(v) else value_text(v)
        )
    return pd.DataFrame(out, index=frame.index)[spec.numeric_features + spec.categorical_features]
