"""Step 1 of training: the labelled rows the model learns from, read from the store
(on the engine: in parallel ranges on Dask) and checked before any fitting."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.engine import LOCAL, Engine
from mlcycle.errors import TrainingError
from mlcycle.spec import NUMBER_LIMIT, DatasetSpec, value_text
from mlcycle.store.base import BATCHES, Store, as_datetime
from mlcycle.store.lease import describe_holder, live_holder
from mlcycle.train.features import model_frame
from mlcycle.train.holdout import EvaluationSet, evaluation_set, id_positions


@dataclass(frozen=True)
class Snapshot:
    """The labelled rows training uses, sorted by id so the split is reproducible."""

    X: pd.DataFrame
    y: np.ndarray
    ids: list[str]
    data_hash: str
    batch_ids: list[str]
    batch_statuses: dict[str, str] = field(default_factory=dict)
    row_hashes: list[str] = field(default_factory=list)
    """Each row's content hash (the ETL's `_hash`), in the order of `ids`."""
    positions: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Each id's hold-out position (`mlcycle.train.holdout.id_positions`)."""
    sensitive: pd.DataFrame | None = None
    """The spec's sensitive columns, aligned with `X` (inputs or not)."""
    loaded: list[str] | None = None
    """When the rows' ETL batches ran: the first start and the last finish (ISO 8601)."""

    def evaluation_set(self, fraction: float) -> EvaluationSet:
        """The hold-out rows below `fraction`: the rows a decision is measured on."""
        return evaluation_set(self.X, self.y, self.ids, self.row_hashes, self.positions, fraction)


def load_snapshot(store: Store, spec: DatasetSpec, engine: Engine = LOCAL) -> Snapshot:
    """Read the newest labelled rows and check they can train a model (on the dask
    engine, MongoDB is read by the workers in parallel `_id` ranges)."""
    if spec.target is None:
        raise TrainingError(f"dataset spec {spec.name!r} has no target column")
    target = spec.target.column
    holder = live_holder(store, spec.name)
    if holder is not None:
        raise TrainingError(
            f"dataset {spec.name!r} is being loaded right now by {describe_holder(holder)}: "
            "train when it has finished, so a model never learns from half a load"
        )
    extra = [c for c in spec.sensitive if c not in spec.feature_columns]
    columns = [spec.id_column, *spec.feature_columns, *extra, target, "_hash", "_batch_id"]
    frame = engine.read_snapshot(store, spec.name, columns, target)
    if frame.empty:
        raise TrainingError(
            f"no labelled rows for dataset {spec.name!r} in the {store.name} store: "
            "run `mlcycle etl` on files that have the target column first"
        )
    empty = [c for c in spec.feature_columns if frame[c].isna().all()]
    if empty:
        raise TrainingError(
            f"feature column(s) {', '.join(empty)} have no values in the snapshot "
            "(missing from the stored rows?); fix the data or the spec's features"
        )
    frame = frame.sort_values(spec.id_column, kind="stable").reset_index(drop=True)
    labels = spec.target.labels
    # stored labels are text (category), numbers (integer) or booleans: compare as text
    y = frame[target].map(lambda v: labels.get(value_text(v)))
    if y.isna().any():
        bad = sorted(set(frame.loc[y.isna(), target].astype(str)))
        raise TrainingError(f"target values {bad} have no label mapping in the spec")
    classes = y.value_counts()
    if len(classes) < 2:
        raise TrainingError(
            f"only one class ({frame[target].iloc[0]!r}) among {len(frame)} labelled rows: "
            "a classifier needs at least two"
        )
    X = model_frame(frame, spec)
    numbers = X[spec.numeric_features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) & ~np.isnan(numbers) | (
        np.abs(np.nan_to_num(numbers)) > NUMBER_LIMIT
    )
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        where = ", ".join(
            f"{frame[spec.id_column].iloc[r]} ({', '.join(np.array(spec.numeric_features)[bad[r]])})"
            for r in rows[:10]
        )
        raise TrainingError(
            f"{len(rows)} stored row(s) hold a non-finite or out-of-range number (beyond "
            f"±{NUMBER_LIMIT:g}): {where}. Fix them at the source and rerun `mlcycle etl`"
        )
    batch_ids = sorted(frame["_batch_id"].dropna().astype(str).unique().tolist())
    ids = frame[spec.id_column].astype(str).tolist()
    row_hashes = frame["_hash"].astype(str).tolist()
    digest = hashlib.sha256()
    for ident, h in zip(ids, row_hashes, strict=True):
        digest.update(f"{ident}\t{h}\n".encode())
    return Snapshot(
        X=X,
        y=y.to_numpy(dtype=np.int64),
        ids=ids,
        data_hash=digest.hexdigest(),
        row_hashes=row_hashes,
        positions=id_positions(ids),
        sensitive=frame[spec.sensitive].copy() if spec.sensitive else None,
        batch_ids=batch_ids,
        **_batches(store, batch_ids),
    )


def _batches(store: Store, batch_ids: list[str]) -> dict[str, Any]:
    """The rows' ETL batches: each one's status, and when they ran (first to last)."""
    wanted = set(batch_ids)
    found = [b for b in store.find(BATCHES) if str(b.get("_id")) in wanted]
    starts = [as_datetime(b["started_at"]) for b in found if b.get("started_at")]
    ends = [as_datetime(b["finished_at"]) for b in found if b.get("finished_at")]
    return {
        "batch_statuses": {str(b["_id"]): str(b.get("status")) for b in found},
        "loaded": [min(starts).isoformat(), max(ends or starts).isoformat()] if starts else None,
    }


def profile(snapshot: Snapshot, spec: DatasetSpec) -> dict[str, Any]:
    """What `mlcycle preprocess` prints: rows, missing share per column, class balance."""
    assert spec.target is not None
    names = {v: k for k, v in spec.target.labels.items()}
    counts = pd.Series(snapshot.y).map(names).value_counts()
    return {
        "rows": len(snapshot.ids),
        "data_hash": snapshot.data_hash,
        "etl_batches": snapshot.batch_ids,
        "missing_share": {c: round(float(snapshot.X[c].isna().mean()), 4) for c in snapshot.X},
        "class_balance": {str(k): int(v) for k, v in counts.items()},
    }
