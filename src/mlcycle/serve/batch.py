"""Batch scoring (`mlcycle predict`): a file, a folder or the stored table scored with
the champion (or a named version), by the API's own validator and scorer.

Files are read and checked by the ETL's readers and rules (the target column, when a
file has one, is left out: scoring needs none); rows that break a rule go to the
quarantine with their file, row, column and reason, under a batch id `predict-...`, and
are not scored. The rows that pass are scored chunk by chunk by the API's validator and
the served model's scorer: their columns go in as arrays (`RequestValidator.checked_feed`:
the numbers as the ETL's rules passed them, each category's distinct values made
canonical once), so a row gets the same probabilities as `POST /predict` gives it. Output: Parquet or CSV (id, label,
probability, one `probability_<label>` a label, the model and version, and with
`explain` the base and one `contribution_<feature>` a feature), or the store
(`<dataset>_scores`, one document per id and version with the source's hash and the
batch id: a rerun rewrites the same documents).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlcycle.config import Settings
from mlcycle.engine import LOCAL, Engine
from mlcycle.errors import BadInput
from mlcycle.etl.sources import FileSource
from mlcycle.explanation import columns, explanation
from mlcycle.serve.batch_dask import (
    PartJob,
    model_files,
    parts_folder,
    read_stored,
    run_parts,
    run_stored_parts,
    stored_digest,
)
from mlcycle.serve.model import LoadedModel, ModelManager
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store, quarantine_collection
from mlcycle.store.columns import schema_for

logger = logging.getLogger(__name__)

CHUNK_ROWS = 100_000
STORE = "store"


def scores_collection(dataset: str) -> str:
    return f"{dataset}_scores"


@dataclass
class BatchSummary:
    source: str
    source_sha256: str
    out: str
    model_name: str
    model_version: str
    batch_id: str
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "out": self.out,
            "model": {"name": self.model_name, "version": self.model_version},
            "batch_id": self.batch_id,
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "labels": self.labels,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.scored / self.seconds) if self.seconds else None,
        }


def load_model(settings: Settings, spec: DatasetSpec, version: str | None) -> LoadedModel:
    """The champion (`version` None) or that version, loaded and self-checked as the
    server loads it; the server's cache pointer is left alone."""
    manager = ModelManager(settings, spec.registered_model)
    if version is None:
        found, run_id = manager.resolve()
    else:
        if not version.isdigit():
            raise BadInput(f"--version is a version number, not {version!r}")
        from mlcycle import registry

        client = registry.connect(settings, create=False)
        info = registry.get_version(client, spec.registered_model, version=version)
        found, run_id = str(info.version), str(info.run_id)
    return manager.fetch(found, run_id, remember=False)


def _frames(
    files: FileSource | None, stored: pd.DataFrame | None, spec: DatasetSpec, batch_id: str
) -> Iterator[Any]:
    """(typed valid rows, quarantine documents, rows read) a chunk, from the files or
    from the stored rows."""
    if files is None:
        assert stored is not None
        for start in range(0, len(stored), CHUNK_ROWS):
            yield stored.iloc[start : start + CHUNK_ROWS].reset_index(drop=True), [], 0
        return
    for item in files.chunks(spec, CHUNK_ROWS):
        valid, docs = checked_rows(item.chunk.frame, spec, item.origin, batch_id)
        yield valid, docs, len(item.chunk.frame)


def checked_rows(
    raw: pd.DataFrame, spec: DatasetSpec, origin: Any, batch_id: str
) -> tuple[pd.DataFrame, list[Any]]:
    """A chunk read from a file -> (the rows the ETL's rules pass, typed; quarantine
    entries for the others). A target column, when the file has one, is left out."""
    from mlcycle.etl.steps import quarantine_docs
    from mlcycle.rules.frames import validate_chunk

    target = spec.target.column if spec.target is not None else None
    raw = raw.drop(columns=[target]) if target in raw.columns else raw
    result = validate_chunk(raw, spec)
    return result.valid, quarantine_docs(raw, result.issues, origin, batch_id)


def add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


def stored_schema(spec: DatasetSpec) -> pa.Schema:
    """The stored columns scoring reads, typed by the spec."""
    names = dict.fromkeys(["_id", "_hash", spec.id_column, *spec.feature_columns])
    return schema_for(spec, names)


def stored_frame(table: pa.Table) -> pd.DataFrame:
    """Stored rows read as Arrow columns -> the frame scoring takes (categories as
    their text, numbers as float64)."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns[name] = column
    return pa.table(columns).to_pandas()


def source_digest(files: FileSource | None, stored: pd.DataFrame | None) -> str:
    """SHA-256 of the files' contents (in name order; hashed once, as the ETL hashes
    them), or of the stored rows' ids and hashes."""
    digest = hashlib.sha256()
    if files is None:
        assert stored is not None
        pairs = zip(stored["_id"].astype(str), stored["_hash"].astype(str), strict=True)
        for i, h in sorted(pairs):
            digest.update(f"{i}\0{h}\n".encode())
        return digest.hexdigest()
    for part in files.open():
        digest.update(f"{Path(part.path).name}\0{part.sha256}\n".encode())
    return digest.hexdigest()


def _cells(series: pd.Series) -> list[Any]:
    values = series.astype(object)
    return values.where(series.notna(), None).tolist()


def _typed_columns(
    frame: pd.DataFrame, model: LoadedModel
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, list[Any]]]]:
    """The rows' model inputs column by column, without a Python object a row: numbers
    as float64 arrays, categories as codes into their distinct values."""
    numbers = {
        c.name: frame[c.name].to_numpy(dtype=np.float64, na_value=np.nan)
        for c in model.validator.numeric
        if c.name in frame.columns
    }
    categories = {}
    for c in model.validator.categorical:
        if c.name in frame.columns:
            codes, distinct = pd.factorize(frame[c.name], use_na_sentinel=True)
            categories[c.name] = (codes, _cells(pd.Series(distinct, dtype=object)))
    return numbers, categories


def score_frame(
    frame: pd.DataFrame, model: LoadedModel, explain: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Valid rows -> their output rows, by the API's columnar path."""
    spec = model.spec
    n = len(frame)
    feed = model.validator.checked_feed(*_typed_columns(frame, model), n)
    probs = model.scorer.proba(feed)
    labels = np.asarray(model.class_labels, dtype=object)
    best = probs.argmax(axis=1)
    positive = model.positive
    out = pd.DataFrame({spec.id_column: _cells(frame[spec.id_column]) if n else []})
    out["label"] = labels[best]
    out["probability"] = probs[:, positive] if positive is not None else probs.max(axis=1)
    for j, label in enumerate(model.class_labels):
        out[f"probability_{label}"] = probs[:, j]
    out["model_name"] = model.name
    out["model_version"] = model.version
    if explain:
        _explained(out, feed, model)
    counts = {
        str(k): int(v)
        for k, v in zip(labels, np.bincount(best, minlength=len(labels)), strict=True)
    }
    return out, counts


def _explained(out: pd.DataFrame, feed: dict[str, np.ndarray], model: LoadedModel) -> None:
    """The columns `POST /predict?explain=true`'s numbers go in (`explain.columns`)."""
    try:
        found = explanation(model, feed)
    except ValueError as err:
        raise BadInput(f"--explain: {err}") from err
    for name, values in columns(found).items():
        out[name] = values


def score_docs(rows: pd.DataFrame, spec: DatasetSpec, lineage: dict[str, Any]) -> list[Any]:
    """Output rows as `<dataset>_scores` documents: one per id and version, with the
    lineage, so a rerun rewrites the same documents."""
    docs = []
    for row in rows.to_dict("records"):
        row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        docs.append(
            {
                "_id": f"{row[spec.id_column]}@v{row['model_version']}",
                "id": row[spec.id_column],
                **{k: v for k, v in row.items() if k != spec.id_column},
                **lineage,
            }
        )
    return docs


class OutputWriter:
    """Output rows to Parquet, CSV or the store, a chunk at a time."""

    def __init__(self, out: str, store: Store | None, spec: DatasetSpec, lineage: dict[str, Any]):
        self.out, self.store, self.spec, self.lineage = out, store, spec, lineage
        self._parquet: Any = None
        self._csv_started = False
        if out != STORE:
            suffix = Path(out).suffix.lower()
            if suffix not in (".parquet", ".csv"):
                raise BadInput(f"--out {out}: write to a .parquet or .csv file, or to `store`")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(out).with_name(f".{Path(out).name}.{uuid.uuid4().hex[:8]}.tmp")

    def write(self, rows: pd.DataFrame) -> None:
        if self.out == STORE:
            self._to_store(rows)
        elif self.out.lower().endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(rows, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._tmp, table.schema)
            self._parquet.write_table(table)
        else:
            rows.to_csv(self._tmp, mode="a", header=not self._csv_started, index=False)
            self._csv_started = True

    def _to_store(self, rows: pd.DataFrame) -> None:
        assert self.store is not None  # `out` is the store
        self.store.put(scores_collection(self.spec.name), score_docs(rows, self.spec, self.lineage))

    def join(self, part: Path) -> None:
        """A worker's part file (`serve.batch_dask`) appended, then removed."""
        import pyarrow.parquet as pq

        if part.suffix == ".parquet":
            with pq.ParquetFile(part) as found:
                for group in range(found.num_row_groups):
                    table = found.read_row_group(group)
                    if self._parquet is None:
                        self._parquet = pq.ParquetWriter(self._tmp, table.schema)
                    self._parquet.write_table(table)
        else:
            with part.open("rb") as src, self._tmp.open("ab") as dst:
                header = src.readline()
                if not self._csv_started:
                    dst.write(header)
                shutil.copyfileobj(src, dst)
            self._csv_started = True
        part.unlink()

    def close(self, ok: bool) -> None:
        """Moves the finished file into place (never a partial one); drops it on failure."""
        if self.out == STORE:
            return
        if self._parquet is not None:
            self._parquet.close()
        if ok and self._tmp.exists():
            self._tmp.replace(self.out)
        self._tmp.unlink(missing_ok=True)


def run_batch(
    settings: Settings,
    spec: DatasetSpec,
    store: Store,
    source: str,
    out: str,
    version: str | None = None,
    explain: bool = False,
    engine: Engine = LOCAL,
) -> BatchSummary:
    """Score `source` (a file, a folder or `store`) into `out`; see the module docstring
    (and `serve.batch_dask` for the dask engine)."""
    if source != STORE and not Path(source).exists():
        raise BadInput(f"--source {source}: no such file or folder")
    model = load_model(settings, spec, version)
    batch_id = f"predict-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    files = None if source == STORE else FileSource(Path(source))
    stored, parts = None, None
    if files is None and engine.distributed:
        parts = read_stored(store, spec, engine.client)  # held by the workers
        digest = stored_digest(engine.client, parts)
    else:
        if files is None:
            stored = stored_frame(store.read_columns(spec.name, stored_schema(spec)))
        digest = source_digest(files, stored)
    summary = BatchSummary(source, digest, out, model.name, model.version, batch_id)
    lineage = {
        "source": source if source == STORE else str(Path(source).absolute()),
        "source_sha256": summary.source_sha256,
        "batch_id": batch_id,
        "scored_at": datetime.now(UTC),
    }
    writer = OutputWriter(out, store, spec, lineage)
    started = time.perf_counter()
    ok = False
    try:
        if engine.distributed:
            cluster = (files, parts)
            _on_cluster(settings, spec, store, engine, cluster, model, writer, summary, explain)
        else:
            _locally(spec, store, files, stored, model, writer, summary, explain)
        ok = True
    finally:
        writer.close(ok)
        if parts:
            engine.client.cancel(parts)
    if summary.scored == 0 and summary.rejected == 0:
        raise BadInput(f"--source {source}: no rows to score")
    summary.seconds = time.perf_counter() - started
    return summary


def _locally(
    spec: DatasetSpec,
    store: Store,
    files: FileSource | None,
    stored: pd.DataFrame | None,
    model: LoadedModel,
    writer: OutputWriter,
    summary: BatchSummary,
    explain: bool,
) -> None:
    for valid, quarantined, read in _frames(files, stored, spec, summary.batch_id):
        summary.rows += read or len(valid)
        if quarantined:
            store.put(quarantine_collection(spec.name), quarantined)
            summary.rejected += len(quarantined)
        if len(valid):
            rows, counts = score_frame(valid, model, explain)
            writer.write(rows)
            summary.scored += len(rows)
            add_counts(summary.labels, counts)
        logger.info("scored %s rows so far (%s rejected)", f"{summary.scored:,}", summary.rejected)


def _on_cluster(
    settings: Settings,
    spec: DatasetSpec,
    store: Store,
    engine: Engine,
    source: tuple[FileSource | None, list[Any] | None],
    model: LoadedModel,
    writer: OutputWriter,
    summary: BatchSummary,
    explain: bool,
) -> None:
    """Score the files' parts, or the stored table's parts the workers hold."""
    from mlcycle.etl.distributed import worker_database

    files, parts = source
    parts_dir = None if summary.out == STORE else parts_folder(summary.out)
    job = PartJob(
        spec,
        model_files(settings, model),
        summary.out,
        parts_dir,
        explain,
        summary.batch_id,
        writer.lineage,
        worker_database(store),
        CHUNK_ROWS,
    )
    try:
        if files is not None:
            run_parts(spec, store, engine.client, files, job, writer, summary)
        else:
            assert parts is not None
            run_stored_parts(spec, engine.client, parts, job, writer, summary)
    finally:
        if parts_dir is not None:
            shutil.rmtree(parts_dir, ignore_errors=True)
