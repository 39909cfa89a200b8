"""Steps 1-3 of training on the Dask engine's workers: model kind `lightgbm`, fitted by
LightGBM's own Dask interface (`lightgbm.dask`) from partitions the workers hold.

The training part never comes to the client. Each worker reads one `_id` range of
MongoDB itself (the embedded store, one local file, is read here and its slices sent
out), converts it exactly as the local snapshot does (`snapshot.snapshot_rows`), and
keeps it. The client gets, per partition, a few numbers (rows and classes on each side
of the hold-out, the categories seen, the ETL batches), the `<id>\\t<row hash>` lines
that make the data hash (digested part by part, in id order, then let go: the same hash
as a local read), the hold-out rows (the evaluation set every decision rests on, as on
the local engine) and a sample of the training part (`SAMPLE_ROWS`, picked by the ids'
hold-out positions, so the same rows on any partitioning).

One preprocessor is fitted here and sent to every worker: the imputers' medians and
the scaler from the sample, the one-hot categories from every partition (exact), so
each partition is encoded alike. LightGBM then trains data-parallel over the workers
(its own network between them); the fitted booster comes back as an ordinary
`LGBMClassifier`, and the pipeline goes on through export, judging and registration as
a local one does. There is no k-fold CV on the cluster: the hold-out is the evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlcycle.engine import Engine
from mlcycle.errors import TrainingError
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.store.columns import TextColumn
from mlcycle.train.config import TrainConfig
from mlcycle.train.features import LIGHTGBM_DEFAULTS, MISSING, build_pipeline
from mlcycle.train.fitting import FitResult, Split, check_sides, held_out
from mlcycle.train.holdout import id_positions, line_blocks
from mlcycle.train.snapshot import (
    Rows,
    Snapshot,
    batch_facts,
    check_classes,
    check_table,
    check_trainable,
    read_schema,
    snapshot_rows,
)

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 100_000
"""Training rows the client receives: what the preprocessor's medians and scaling are
fitted on, the monitoring reference and the ONNX parity check."""
KINDS = ("lightgbm",)
"""Model kinds the dask engine fits on its workers (the others fit here, with the CV
folds on the workers)."""


def fits_on_cluster(cfg: TrainConfig, engine: Engine) -> bool:
    return engine.distributed and cfg.model.kind in KINDS


@dataclass
class Part:
    """One partition, on its worker: the rows and each one's hold-out position."""

    rows: Rows
    positions: np.ndarray


@dataclass
class Facts:
    """What a partition tells the client."""

    rows: int
    held: np.ndarray
    """Rows per class in the hold-out."""
    train: np.ndarray
    """Rows per class in the training part."""
    categories: dict[str, list[str]]
    """Each categorical feature's texts in the training part (MISSING when one lacks it)."""
    present: dict[str, int]
    """Rows with a value, per feature."""
    batch_ids: list[str]
    lines: bytes
    """`<id>\\t<row hash>\\n` for each row, in id order (the data hash's input)."""


def convert(table: pa.Table, spec: DatasetSpec) -> Part:
    """On a worker: stored columns as training rows, in id order."""
    rows = snapshot_rows(table, spec)
    return Part(rows, id_positions(rows.ids))


def read_part(
    mongo_db: str, spec: DatasetSpec, schema: pa.Schema, id_range: tuple[Any, Any]
) -> Part:
    """On a worker: one `_id` range of MongoDB, read with the worker's own MONGO_URI."""
    from mlcycle.etl.distributed import read_range

    assert spec.target is not None
    return convert(read_range(mongo_db, spec.name, schema, spec.target.column, id_range), spec)


def part_rows(part: Part) -> int:
    return len(part.rows.y)


def facts(part: Part, test_size: float, classes: int) -> Facts:
    rows = part.rows
    held = part.positions < test_size
    categories: dict[str, list[str]] = {}
    for name in rows.X.columns:
        column = rows.X[name]
        if column.dtype == object:
            found = column[~held]
            texts = sorted({str(v) for v in found.dropna().unique()})
            categories[name] = texts + ([MISSING] if found.isna().any() else [])
    return Facts(
        rows=len(rows.y),
        held=np.bincount(rows.y[held], minlength=classes),
        train=np.bincount(rows.y[~held], minlength=classes),
        categories=categories,
        present={name: int(rows.X[name].notna().sum()) for name in rows.X.columns},
        batch_ids=rows.batch_ids,
        lines=b"".join(line_blocks(rows.ids.arrow, rows.row_hashes.arrow)),
    )


@dataclass
class Picked:
    """Some of a partition's rows, for the client."""

    X: pd.DataFrame
    y: np.ndarray
    ids: pa.ChunkedArray
    row_hashes: pa.ChunkedArray
    positions: np.ndarray
    sensitive: pd.DataFrame | None


def pick(part: Part, below: float) -> Picked:
    """The rows whose hold-out position is below `below` (the hold-out and the sample)."""
    keep = part.positions < below
    rows, where = part.rows, np.flatnonzero(keep)
    return Picked(
        X=rows.X.iloc[where].reset_index(drop=True),
        y=rows.y[keep],
        ids=rows.ids.arrow.take(pa.array(where)),
        row_hashes=rows.row_hashes.arrow.take(pa.array(where)),
        positions=part.positions[keep],
        sensitive=None
        if rows.sensitive is None
        else rows.sensitive.iloc[where].reset_index(drop=True),
    )


def encoded(part: Part, features: Any, test_size: float) -> np.ndarray:
    """On a worker: the training part's rows through the one fitted preprocessor."""
    train = part.positions >= test_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        out = features.transform(part.rows.X[train])
    return np.ascontiguousarray(np.asarray(out, dtype=np.float64))


def labels(part: Part, test_size: float) -> np.ndarray:
    return part.rows.y[part.positions >= test_size]


class ClusterTraining:
    """A fit on the workers: `open` reads the partitions there and brings the client
    its share (`snapshot`); `fit` trains; `close` lets the partitions go."""

    def __init__(self, engine: Engine, spec: DatasetSpec, cfg: TrainConfig) -> None:
        self.client = engine.client
        self.spec, self.cfg = spec, cfg
        self.parts: list[Any] = []
        self.facts: list[Facts] = []
        self.snapshot: Snapshot | None = None

    def open(self, store: Store) -> Snapshot:
        spec, cfg = self.spec, self.cfg
        assert spec.target is not None
        if cfg.search is not None:
            raise TrainingError(
                "a grid search runs on the local engine's CV folds: drop `search` from the "
                "training config to fit lightgbm on the dask engine, or train locally"
            )
        check_trainable(store, spec)
        self.parts = self._read(store)
        classes = max(spec.target.labels.values()) + 1
        sizes = [f.result() for f in [self.client.submit(part_rows, p) for p in self.parts]]
        self.cfg = cfg = held_out(cfg, sum(sizes))
        self.facts = [
            f.result()
            for f in [self.client.submit(facts, p, cfg.test_size, classes) for p in self.parts]
        ]
        digest, total = hashlib.sha256(), 0
        for found in self.facts:
            digest.update(found.lines)
            total += found.rows
            found.lines = b""
        self._check(store, total)
        train_rows = int(sum(f.train.sum() for f in self.facts))
        share = min(1.0, SAMPLE_ROWS / max(train_rows, 1))
        below = cfg.test_size + share * (1.0 - cfg.test_size)
        picked = [f.result() for f in [self.client.submit(pick, p, below) for p in self.parts]]
        batch_ids = sorted({b for f in self.facts for b in f.batch_ids})
        shared = _snapshot(picked, digest.hexdigest(), total, batch_ids, self.facts)
        self.snapshot = dataclasses.replace(shared, **batch_facts(store, batch_ids))
        logger.info(
            "on the cluster: %s rows in %d partitions; here: the %s hold-out rows and a "
            "sample of %s training rows",
            f"{total:,}",
            len(self.parts),
            f"{int(sum(f.held.sum() for f in self.facts)):,}",
            f"{len(self.snapshot.ids) - int(sum(f.held.sum() for f in self.facts)):,}",
        )
        return self.snapshot

    def _read(self, store: Store) -> list[Any]:
        """Futures of the partitions, on the workers."""
        from mlcycle.store.mongo import MongoStore

        spec, schema = self.spec, read_schema(self.spec)
        assert spec.target is not None
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        if isinstance(store, MongoStore):
            from mlcycle.etl.distributed import id_ranges

            return [
                self.client.submit(read_part, store.db.name, spec, schema, r, pure=False)
                for r in id_ranges(store, spec.name, 2 * workers)
            ]
        table = store.read_columns(spec.name, schema, require=spec.target.column)
        check_table(table, spec, store)  # (nothing to send: the local read's messages)
        table = table.take(pc.sort_indices(table[spec.id_column]))
        step = -(-table.num_rows // (2 * workers)) or 1
        slices = [table.slice(start, step) for start in range(0, table.num_rows, step)]
        del table
        futures = self.client.scatter(slices, hash=False)  # (slices of one table tokenize alike)
        return [self.client.submit(convert, s, spec, pure=False) for s in futures]

    def _check(self, store: Store, total: int) -> None:
        spec, cfg = self.spec, self.cfg
        assert spec.target is not None
        if total == 0:
            raise TrainingError(
                f"no labelled rows for dataset {spec.name!r} in the {store.name} store: "
                "run `mlcycle etl` on files that have the target column first"
            )
        empty = [
            c for c in spec.feature_columns if not sum(f.present.get(c, 0) for f in self.facts)
        ]
        if empty:
            raise TrainingError(
                f"feature column(s) {', '.join(empty)} have no values in the snapshot "
                "(missing from the stored rows?); fix the data or the spec's features"
            )
        held = np.sum([f.held for f in self.facts], axis=0)
        train = np.sum([f.train for f in self.facts], axis=0)
        check_classes(held + train, spec)
        names = {v: k for k, v in spec.target.labels.items()}
        check_sides(held, train, cfg, names, folds=False)

    def fit(self) -> FitResult:
        """The preprocessor fitted here, the partitions encoded and LightGBM trained on
        the workers, the hold-out scored here."""
        import dask
        import dask.array as da
        from lightgbm import DaskLGBMClassifier
        from sklearn.dummy import DummyClassifier

        from mlcycle.train.evaluation import evaluate, positive_class

        spec, cfg, snap = self.spec, self.cfg, self.snapshot
        assert snap is not None and spec.target is not None
        held = snap.positions < cfg.test_size
        X_sample, y_sample = snap.X[~held], snap.y[~held]
        pipeline = build_pipeline(spec, cfg.model, cfg.seed)
        features = pipeline.named_steps["features"]
        if spec.categorical_features:
            categories: dict[str, set[str]] = {c: set() for c in spec.categorical_features}
            for found in self.facts:
                for name, texts in found.categories.items():
                    categories[name].update(texts)
            features.set_params(
                cat__onehot__categories=[
                    np.asarray(sorted(categories[c]), dtype=object)
                    for c in spec.categorical_features
                ]
            )
        features.fit(X_sample)
        width = len(features.get_feature_names_out())
        sent = self.client.scatter(features, broadcast=True)
        rows = [int(f.train.sum()) for f in self.facts]
        xs, ys = [], []
        for part, n in zip(self.parts, rows, strict=True):
            if n == 0:
                continue
            x = self.client.submit(encoded, part, sent, cfg.test_size)
            y = self.client.submit(labels, part, cfg.test_size)
            xs.append(da.from_delayed(dask.delayed(x), shape=(n, width), dtype=np.float64))
            ys.append(da.from_delayed(dask.delayed(y), shape=(n,), dtype=np.int64))
        params = {**LIGHTGBM_DEFAULTS, **cfg.model.params}
        model = DaskLGBMClassifier(client=self.client, random_state=cfg.seed, **params)
        with warnings.catch_warnings():  # it takes each worker's threads, as it says
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(da.concatenate(xs), da.concatenate(ys))
        pipeline.steps[-1] = ("model", model.to_local())
        counts = np.sum([f.train for f in self.facts], axis=0)
        classes = [
            int(c) for c in np.flatnonzero(counts + np.sum([f.held for f in self.facts], axis=0))
        ]
        positive = positive_class(spec)
        X_test, y_test = snap.X[held], snap.y[held]
        metrics = evaluate(pipeline, X_test, y_test, positive, classes)
        present = np.flatnonzero(counts)
        dummy = DummyClassifier(strategy="most_frequent").fit(
            np.zeros((len(present), 1)), present, sample_weight=counts[present]
        )
        baseline = evaluate(dummy, X_test, y_test, positive, classes)
        part = Split(X_sample, np.arange(len(X_sample)), X_test, y_sample, y_test, folds=None)
        return FitResult(pipeline, {}, metrics, baseline, {}, part, classes)

    def describe(self) -> str:
        return f"lightgbm.dask on {len(self.client.scheduler_info().get('workers', {}))} workers"

    def close(self) -> None:
        if self.parts:
            self.client.cancel(self.parts)
            self.parts = []


def _snapshot(
    picked: list[Picked], data_hash: str, total: int, batch_ids: list[str], found: list[Facts]
) -> Snapshot:
    """The client's share as a Snapshot: its rows in id order (the partitions are id
    ranges, in order), the counts and hash of all of them."""
    X = pd.concat([p.X for p in picked], ignore_index=True)
    sensitive = (
        None
        if picked[0].sensitive is None
        else pd.concat([p.sensitive for p in picked], ignore_index=True)
    )
    ids = pa.chunked_array([c for p in picked for c in p.ids.chunks], pa.string())
    hashes = pa.chunked_array([c for p in picked for c in p.row_hashes.chunks], pa.string())
    return Snapshot(
        X=X,
        y=np.concatenate([p.y for p in picked]),
        ids=TextColumn(ids),
        data_hash=data_hash,
        batch_ids=batch_ids,
        row_hashes=TextColumn(hashes),
        positions=np.concatenate([p.positions for p in picked]),
        sensitive=sensitive,
        total=total,
        class_counts=np.sum([f.held + f.train for f in found], axis=0),
    )
