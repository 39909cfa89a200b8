"""`mlcycle predict --engine dask`: the files' parts, or the stored table's, scored on
the Dask workers.

The files are cut into parts as the ETL cuts them (`etl.partitions.plan_parts`: whole
files, or record-aligned byte ranges of a large CSV or JSONL), and each worker reads,
checks and scores its parts with the same readers, rules, validator and scorer as the
local engine, so a row gets the same probabilities either way. The model travels as its
serving bundle's files (a few KB to MB) and is loaded and self-checked once a worker
process. Output rows go to a part file next to `--out` (the workers must see the client's
paths, as for the ETL), which the client joins in part order into the one file; to the
store they are written by the workers themselves on MongoDB, or handed back to the client
for the embedded store (its one writer). Quarantine entries are made on the workers with
rows counted from the part's start; the client moves them to the file's row numbers once
the earlier parts' row counts are known, so they match the local engine's.

The stored table (`--source store`) is cut into `_id` ranges: each worker reads one of
MongoDB itself and keeps it (the embedded store, one local file, is read by the client and
its slices sent out). The source's hash is made first, from each part's sorted
`<_id>\0<_hash>` lines merged on the client (the local engine's hash), then the parts
are scored where they are held.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mlcycle.config import PART_BYTES, Settings
from mlcycle.etl.sources import FileOrigin
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Document, Store, quarantine_collection

logger = logging.getLogger(__name__)

_LOADED: dict[str, Any] = {}
"""Bundles a worker process has loaded, by digest."""


@dataclass(frozen=True)
class ModelFiles:
    """A serving bundle as bytes, to be loaded where it lands."""

    name: str
    version: str
    run_id: str
    digest: str
    choice: str
    files: dict[str, bytes]

    def load(self) -> Any:
        from mlcycle.serve.model import _load_folder, self_check

        if self.digest not in _LOADED:
            folder = Path(tempfile.mkdtemp(prefix="mlcycle-bundle-"))
            try:
                for rel, data in self.files.items():
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / rel).write_bytes(data)
                args = (self.name, self.version, "", self.run_id, "registry", self.digest)
                model = _load_folder(folder, *args, self.choice)
                self_check(model, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            _LOADED[self.digest] = model
        return _LOADED[self.digest]


def model_files(settings: Settings, model: Any) -> ModelFiles:
    """The loaded model's bundle (the server's cache folder) as bytes."""
    from mlcycle.serve.model import ModelManager

    folder = ModelManager(settings, model.name).cache / model.run_id
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return ModelFiles(
        model.name, model.version, model.run_id, model.sha256, settings.serving_scorer, files
    )


@dataclass
class PartScore:
    """What a worker hands back for one part."""

    rows: int = 0
    scored: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    quarantine: list[Document] = field(default_factory=list)
    """Rows counted from the part's start (`shift_rows` moves them)."""
    written: str | None = None
    frames: list[pd.DataFrame] = field(default_factory=list)
    """Output rows for the client to write (the embedded store)."""


@dataclass(frozen=True)
class PartJob:
    """The parameters every part's task shares."""

    spec: DatasetSpec
    bundle: ModelFiles
    out: str
    parts_dir: str | None
    explain: bool
    batch_id: str
    lineage: dict[str, Any]
    mongo_db: str | None
    chunk_rows: int


class _PartOutput:
    """Where one part's output rows go: a part file, the store (the workers write to
    MongoDB themselves), or back to the client (the embedded store's one writer)."""

    def __init__(self, index: int, job: PartJob, out: PartScore) -> None:
        from mlcycle.serve.batch import STORE, OutputWriter

        self.job, self.out, self.model = job, out, job.bundle.load()
        self.sink = None
        if job.parts_dir is not None:
            name = f"part-{index:06d}{Path(job.out).suffix.lower()}"
            self.sink = OutputWriter(str(Path(job.parts_dir) / name), None, job.spec, {})
        self.store = None
        if job.out == STORE and job.mongo_db:
            from mlcycle.etl.distributed import worker_store

            self.store = worker_store(job.mongo_db)

    def score(self, valid: pd.DataFrame) -> None:
        from mlcycle.serve.batch import (
            STORE,
            add_counts,
            score_docs,
            score_frame,
            scores_collection,
        )

        job, out = self.job, self.out
        rows, counts = score_frame(valid, self.model, job.explain)
        out.scored += len(rows)
        add_counts(out.labels, counts)
        if self.store is not None:
            self.store.put(
                scores_collection(job.spec.name), score_docs(rows, job.spec, job.lineage)
            )
        elif job.out == STORE:
            out.frames.append(rows)
        elif self.sink is not None:
            self.sink.write(rows)

    def close(self, ok: bool) -> None:
        if self.sink is not None:
            self.sink.close(ok)
            self.out.written = self.sink.out if Path(self.sink.out).exists() else None
        if self.store is not None:
            self.store.close()


def score_part(part: Any, job: PartJob) -> PartScore:
    """One part of the files on a worker: read, check, score, write (or hand back)."""
    from mlcycle.etl.distributed import _part_chunks
    from mlcycle.serve.batch import checked_rows

    out = PartScore()
    sink = _PartOutput(part.index, job, out)
    ok = False
    try:
        for chunk in _part_chunks(part, job.spec, job.chunk_rows, part.check()):
            origin = FileOrigin(part.path, part.sha256, chunk.first_row, chunk.line_offset)
            valid, docs = checked_rows(chunk.frame, job.spec, origin, job.batch_id)
            out.quarantine += docs
            out.rows += len(chunk.frame)
            if len(valid):
                sink.score(valid)
        ok = True
    finally:
        sink.close(ok)
    return out


def score_stored(index: int, table: pa.Table, job: PartJob) -> PartScore:
    """One `_id` range of the stored table on a worker: score, write (or hand back)."""
    from mlcycle.serve.batch import stored_frame

    frame = stored_frame(table)
    out = PartScore(rows=len(frame))
    sink = _PartOutput(index, job, out)
    ok = False
    try:
        for start in range(0, len(frame), job.chunk_rows):
            sink.score(frame.iloc[start : start + job.chunk_rows].reset_index(drop=True))
        ok = True
    finally:
        sink.close(ok)
    return out


def stored_lines(table: pa.Table) -> list[bytes]:
    """On a worker: `<_id>\0<_hash>\n` for each stored row, sorted (as the bytes sort:
    the order of the ids' text), for the source's digest."""
    import pyarrow.compute as pc

    ids = pc.cast(table["_id"], pa.string())
    lines = pc.binary_join_element_wise(ids, pc.cast(table["_hash"], pa.string()), "\0")
    return sorted(f"{line}\n".encode() for line in lines.to_pylist())


def read_stored(store: Store, spec: DatasetSpec, client: Any) -> list[Any]:
    """Futures of the stored table's parts, held by the workers: each reads one `_id`
    range of MongoDB itself; the embedded store, one local file, is read here and its
    slices sent out."""
    from mlcycle.etl.distributed import id_ranges, read_range
    from mlcycle.serve.batch import stored_schema
    from mlcycle.store.mongo import MongoStore

    schema = stored_schema(spec)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    if isinstance(store, MongoStore):
        return [
            client.submit(read_range, store.db.name, spec.name, schema, None, r, pure=False)
            for r in id_ranges(store, spec.name, 2 * workers)
        ]
    table = store.read_columns(spec.name, schema)
    step = -(-table.num_rows // (2 * workers)) or 1
    slices = [table.slice(start, step) for start in range(0, table.num_rows, step)]
    return list(client.scatter(slices, hash=False))


def stored_digest(client: Any, parts: list[Any]) -> str:
    """The stored rows' digest (`serve.batch.source_digest`'s), from the workers' sorted
    lines merged here."""
    digest = hashlib.sha256()
    found = [f.result() for f in [client.submit(stored_lines, p) for p in parts]]
    for line in heapq.merge(*found):
        digest.update(line)
    return digest.hexdigest()


def run_stored_parts(
    spec: DatasetSpec, client: Any, parts: list[Any], job: PartJob, writer: Any, summary: Any
) -> None:
    """Score the stored table's parts on the cluster into `writer`, in part order."""
    from mlcycle.serve.batch import add_counts

    futures = [client.submit(score_stored, i, p, job, pure=False) for i, p in enumerate(parts)]
    try:
        for i, future in enumerate(futures):
            found = future.result()
            future.release()
            summary.rows += found.rows
            summary.scored += found.scored
            add_counts(summary.labels, found.labels)
            for rows in found.frames:
                writer.write(rows)
            if found.written is not None:
                writer.join(Path(found.written))
            logger.info("stored part %d: scored %s rows so far", i, f"{summary.scored:,}")
    except BaseException:
        client.cancel(futures)
        raise


def shift_rows(docs: list[Document], shift: int) -> list[Document]:
    """Quarantine entries counted from a part's start, moved `shift` rows on: their
    row, line and id as the local engine gives them."""
    for doc in docs:
        doc["row"] += shift
        doc["line"] += shift
        doc["_id"] = FileOrigin(doc["file"], doc["file_sha256"], 0, 0).quarantine_id(doc["row"])
    return docs


def run_parts(
    spec: DatasetSpec,
    store: Store,
    client: Any,
    files: Any,
    job: PartJob,
    writer: Any,
    summary: Any,
) -> None:
    """Score the files' parts on the cluster into `writer` (the local engine's), in part
    order; quarantine entries into the store with the files' row numbers."""
    from distributed import as_completed

    from mlcycle.etl.partitions import plan_parts

    parts = plan_parts(files, PART_BYTES)
    futures = client.map(score_part, parts, job=job, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    done: dict[int, PartScore] = {}
    before: dict[int, int] = {}  # rows of a file's parts already applied
    applied = 0
    try:
        for future in as_completed(futures):
            done[index[future.key]] = future.result()
            future.release()
            while applied in done:  # in part order: the rows before a part are known
                part, found = parts[applied], done.pop(applied)
                shift = before.get(part.file_no, 0)
                before[part.file_no] = shift + found.rows
                _apply(part, found, shift, spec, store, writer, summary)
                applied += 1
    except BaseException:
        client.cancel(futures)  # no part keeps writing once the run has failed
        raise


def _apply(
    part: Any,
    found: PartScore,
    shift: int,
    spec: DatasetSpec,
    store: Store,
    writer: Any,
    summary: Any,
) -> None:
    """One part's result, on the client, in part order."""
    from mlcycle.serve.batch import add_counts

    summary.rows += found.rows
    summary.scored += found.scored
    add_counts(summary.labels, found.labels)
    if found.quarantine:
        store.put(quarantine_collection(spec.name), shift_rows(found.quarantine, shift))
        summary.rejected += len(found.quarantine)
    for rows in found.frames:
        writer.write(rows)
    if found.written is not None:
        writer.join(Path(found.written))
    logger.info(
        "part %d (%s): scored %s rows so far (%s rejected)",
        part.index,
        Path(part.path).name,
        f"{summary.scored:,}",
        summary.rejected,
    )


def parts_folder(out: str) -> str:
    """A folder next to `out` for the workers' part files (removed when joined)."""
    folder = Path(out).absolute().parent / f".{Path(out).name}.{uuid.uuid4().hex[:8]}.parts"
    folder.mkdir(parents=True)
    return str(folder)
