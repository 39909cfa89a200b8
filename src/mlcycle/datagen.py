"""A seeded synthetic table for any dataset spec, so the pipeline runs offline.

Values follow each column's rules (allowed values, ranges, a few missing values where
nullable); the target follows a seeded logistic model of the features, so a model has
real signal to learn. For the loan spec it yields a Loan Prediction–like table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle.spec import ColumnSpec, DatasetSpec


def _numeric(col: ColumnSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    if col.values is not None:
        values = np.array([float(v) for v in col.values])
        weights = np.linspace(1.0, 3.0, len(values))
        return rng.choice(values, size=n, p=weights / weights.sum())
    low = col.min if col.min is not None else 0.0
    high = col.max if col.max is not None else max(low, 0.0) + 10_000.0
    if col.max is None:  # skewed, like incomes and amounts
        scale = max(abs(low), 1.0) * 50 + 1000
        out = low + rng.lognormal(mean=np.log(scale), sigma=0.6, size=n)
    else:
        out = rng.uniform(low, high, size=n)
    out = np.round(out, 0 if col.type == "integer" else 1)
    return np.asarray(out, dtype=float)


def generate(
    spec: DatasetSpec, rows: int, seed: int = 42, missing_share: float = 0.02
) -> pd.DataFrame:
    """A DataFrame of `rows` synthetic, valid rows (as raw text-friendly values)."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    score = np.zeros(rows)
    for name, col in spec.columns.items():
        if name == spec.target_column:
            continue
        if name == spec.id_column:
            data[name] = [f"SYN{seed:03d}{i:08d}" for i in range(rows)]
            continue
        weight = rng.normal(0.0, 1.0)
        if col.type in ("float", "integer"):
            values = _numeric(col, rows, rng)
            std = values.std() or 1.0
            score += weight * (values - values.mean()) / std
            column: pd.Series = pd.Series(values)
        elif col.type == "boolean":
            flags = rng.random(rows) < 0.5
            score += weight * (flags - 0.5)
            column = pd.Series(np.where(flags, "true", "false"))
        elif col.type == "category":
            choices = [str(v) for v in col.values or []]
            codes = rng.integers(0, len(choices), size=rows)
            effects = rng.normal(0.0, 0.7, size=len(choices))
            score += effects[codes]
            column = pd.Series(np.array(choices, dtype=object)[codes])
        else:
            column = pd.Series([f"s{i}" for i in rng.integers(0, 1000, size=rows)])
        if col.nullable and missing_share > 0:
            column = column.astype(object).where(rng.random(rows) >= missing_share, None)
        data[name] = column
    if spec.target is not None:
        labels = sorted(spec.target.labels, key=lambda k: spec.target.labels[k])  # type: ignore[union-attr]
        prob = 1.0 / (1.0 + np.exp(-(1.5 * score / max(score.std(), 1e-9) + 0.6)))
        positive = spec.target.positive
        negative = next(label for label in labels if label != positive)
        data[spec.target.column] = np.where(rng.random(rows) < prob, positive, negative)
    return pd.DataFrame(data)


def write_demo(spec: DatasetSpec, path: Path, rows: int, seed: int = 42) -> Path:
    """Write a synthetic CSV to `path` (a folder gets `<name>_synthetic.csv`)."""
    if path.suffix.lower() != ".csv":
        path = path / f"{spec.name}_synthetic.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    generate(spec, rows, seed).to_csv(path, index=False)
    return path
