"""A seeded synthetic table for any dataset spec, so the pipeline runs offline.

Each column follows its rules (allowed values, ranges, nullability). A column's `demo`
block in the spec shapes it like the real data (value shares, log-normal numbers around a
median, zeros, missing values) and gives it a documented effect on the target's log-odds;
the target is then drawn from that logistic model. Effects are fixed by the spec, never
random, so the direction of every effect is known: for the bundled loan spec a better
credit history or a higher income at an equal loan never lowers approval. Columns without
a `demo` block get plain draws within their rules and no effect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle.spec import ColumnSpec, DatasetSpec, DemoSpec, value_text


def _choose(
    options: dict[str, float], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    keys = list(options)
    weights = np.array([max(float(w), 0.0) for w in options.values()])
    codes = rng.choice(len(keys), size=n, p=weights / weights.sum())
    return codes, keys


def _numeric(col: ColumnSpec, demo: DemoSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    low = col.min if col.min is not None else 0.0
    if demo.choices:
        codes, keys = _choose(demo.choices, n, rng)
        out = np.array([float(k) for k in keys])[codes]
    elif col.values is not None:
        options = demo.weights or {value_text(v): 1.0 for v in col.values}
        codes, keys = _choose(options, n, rng)
        out = np.array([float(k) for k in keys])[codes]
    else:
        median = demo.median if demo.median is not None else max(abs(low), 1.0) * 50 + 1000
        out = rng.lognormal(mean=np.log(max(median, 1e-9)), sigma=demo.spread, size=n)
        if demo.zero_share:
            out = np.where(rng.random(n) < demo.zero_share, 0.0, out)
        if col.max is not None:
            out = np.minimum(out, col.max)
        out = np.maximum(out, low)
        out = np.round(out, 0 if col.type == "integer" else 1)
    return np.asarray(out, dtype=float)


def _numeric_effect(values: np.ndarray, weight: float) -> np.ndarray:
    """`weight` per standard deviation of log(1 + value): monotone in the value."""
    logged = np.log1p(np.maximum(values, 0.0))
    std = logged.std() or 1.0
    return np.asarray(weight * (logged - logged.mean()) / std)


def generate(spec: DatasetSpec, rows: int, seed: int = 42) -> pd.DataFrame:
    """A DataFrame of `rows` synthetic, valid rows (values as a raw file would have them)."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    logit = np.zeros(rows)
    for name, col in spec.columns.items():
        if name == spec.target_column:
            continue
        if name == spec.id_column:
            data[name] = [f"SYN{seed:03d}{i:08d}" for i in range(rows)]
            continue
        demo = col.demo or DemoSpec()
        effect = demo.effect
        if col.type in ("float", "integer"):
            values = _numeric(col, demo, rows, rng)
            if isinstance(effect, dict):
                logit += np.array([effect.get(value_text(v), 0.0) for v in values])
            elif effect:
                logit += _numeric_effect(values, effect)
            column: pd.Series = pd.Series(values)
            if col.type == "integer":  # written as 6, not 6.0, as a real file has it
                column = column.astype("Int64")
        elif col.type in ("category", "boolean"):
            allowed = [value_text(v) for v in col.values or []] or ["true", "false"]
            codes, keys = _choose(demo.weights or dict.fromkeys(allowed, 1.0), rows, rng)
            picked = np.array(keys, dtype=object)[codes]
            if isinstance(effect, dict):
                logit += np.array([effect.get(k, 0.0) for k in keys])[codes]
            column = pd.Series(picked)
        else:
            column = pd.Series([f"s{i}" for i in rng.integers(0, 1000, size=rows)])
        if col.nullable and demo.missing > 0:
            column = column.astype(object).where(rng.random(rows) >= demo.missing, None)
        data[name] = column
    if spec.target is not None:
        target = spec.target
        prob = 1.0 / (1.0 + np.exp(-(logit + target.demo_intercept)))
        labels = target.label_order
        if target.binary:
            positive = str(target.positive)
            negative = next(label for label in labels if label != positive)
            data[target.column] = np.where(rng.random(rows) < prob, positive, negative)
        else:  # ordered classes: the noisy score cut into equal shares, low to high
            noisy = logit + rng.logistic(size=rows)
            cuts = np.quantile(noisy, np.linspace(0, 1, len(labels) + 1)[1:-1])
            data[target.column] = np.array(labels, dtype=object)[np.searchsorted(cuts, noisy)]
    return pd.DataFrame(data)


def write_demo(spec: DatasetSpec, path: Path, rows: int, seed: int = 42) -> Path:
    """Write a synthetic CSV to `path` (a folder gets `<name>_synthetic.csv`)."""
    if path.suffix.lower() != ".csv":
        path = path / f"{spec.name}_synthetic.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    generate(spec, rows, seed).to_csv(path, index=False)
    return path
