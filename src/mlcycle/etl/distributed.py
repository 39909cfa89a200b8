"""The batch ETL on a Dask cluster: the same two passes, one task per file part.

Pass 1 (on the workers): each part is read and validated with the same code as the
local engine and returns its counts and the hashes of its valid ids. The client applies
the duplicate-id rule in part order (files in name order, ranges in file order), so the
first occurrence wins exactly as it does locally, and checks the rejected share.

Pass 2 (on the workers): each part is read and validated again, the client's duplicate
verdicts are added to its issues, and it is written: to MongoDB from the worker that
holds it (workers take `MONGO_URI` from their own environment: no password travels in a
task), or, for the embedded store, handed back to the client, the one writer of its
SQLite file. Writes are idempotent upserts and quarantine entries are keyed by file and
row, so a task Dask reruns after a worker died writes nothing twice; the store ends up
as the local engine leaves it.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlcycle.config import CHUNK_ROWS, LOCK_LEASE, MAX_REJECTED_SHARE, PART_BYTES
from mlcycle.errors import MlcycleError, SourceChanged, StructuralError
from mlcycle.etl.extract import RawChunk, read_file
from mlcycle.etl.partitions import FilePart, plan_parts
from mlcycle.etl.pipeline import EtlSummary, batch_run, checked, refuse_if_failed
from mlcycle.etl.reading import FileCheck
from mlcycle.etl.sources import FileOrigin, FileSource
from mlcycle.etl.steps import (
    DuplicateTracker,
    absence,
    column_set_codes,
    id_hashes,
    load_valid,
    quarantine_docs,
    with_column_set,
)
from mlcycle.rules.frames import validate_chunk
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Document, Store, quarantine_collection

logger = logging.getLogger(__name__)


@dataclass
class PartCheck:
    """Pass 1 of one part."""

    rows: int = 0
    rejected: int = 0
    dropped: int = 0
    h1: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    h2: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    """The set of columns each valid row's source carried (`steps.column_set_codes`)."""
    local_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Row of each valid id within the part (from 1)."""
    reads: list[bytes] = field(default_factory=list)
    """The digests of the reading (`etl.reading`): pass 2 reads the same bytes or fails."""


@dataclass
class PartLoad:
    """Pass 2 of one part: counts, and what the client writes for the embedded store."""

    quarantined: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantine: list[Document] = field(default_factory=list)
    accepted: list[tuple[pd.DataFrame, FileOrigin, pd.DataFrame]] = field(default_factory=list)


def _part_chunks(
    part: FilePart, spec: DatasetSpec, chunk_rows: int, check: FileCheck
) -> Iterator[RawChunk]:
    """The part's chunks, read on a worker from the absolute path the client named and
    checked against the bytes the client planned: a worker that sees another file (or
    none) at that path fails the run, naming its host."""
    try:
        yield from read_file(Path(part.path), spec, chunk_rows, part.span, check)
    except SourceChanged as err:
        raise SourceChanged(
            f"{err} (worker {socket.gethostname()}: the Dask workers must see the same files "
            "as the client, at the same absolute path: a shared volume or object storage)"
        ) from err
    except (FileNotFoundError, StructuralError) as err:
        if Path(part.path).exists():
            raise
        raise StructuralError(
            f"{part.path}: no such file on the Dask worker {socket.gethostname()}: the "
            "workers must see the same files as the client, at the same absolute path "
            "(mount the data volume on the workers, or use object storage)"
        ) from err


def check_part(part: FilePart, spec: DatasetSpec, chunk_rows: int) -> PartCheck:
    """Pass 1 on a worker: validate, count, and hash the valid ids."""
    out = PartCheck()
    h1, h2, codes, rows = [], [], [], []
    check = part.check()
    for chunk in _part_chunks(part, spec, chunk_rows, check):
        result = validate_chunk(chunk.frame, spec)
        out.rows += len(chunk.frame)
        out.rejected += int(result.issues["pos"].nunique()) if len(result.issues) else 0
        out.dropped += result.dropped
        a, b = id_hashes(result.valid[spec.id_column])
        h1.append(a)
        h2.append(b)
        absent = absence(chunk.frame, chunk.absent, spec)
        codes.append(column_set_codes(absent, spec, result.valid.index))
        rows.append(chunk.first_row + result.valid.index.to_numpy(dtype=np.int64))
    if h1:
        out.h1, out.h2, out.codes, out.local_rows = (
            np.concatenate(h1),
            np.concatenate(h2),
            np.concatenate(codes),
            np.concatenate(rows),
        )
    out.reads = check.reads
    return out


def worker_store(mongo_db: str) -> Store:
    """The store a worker writes to: MongoDB from the worker's own MONGO_URI."""
    from mlcycle.config import get_settings
    from mlcycle.store.mongo import MongoStore

    settings = get_settings()
    if settings.mongo_uri is None or not settings.mongo_uri.get_secret_value():
        raise MlcycleError(
            "a Dask worker has no MONGO_URI: give the workers the same MONGO_URI as the "
            "client (their environment or .env), or use the embedded store"
        )
    return MongoStore(
        settings.mongo_uri.get_secret_value(),
        mongo_db,
        timeout_ms=settings.store_timeout_ms,
        retries=settings.store_retries,
    )


def load_part(
    part: FilePart,
    spec: DatasetSpec,
    chunk_rows: int,
    first_row: int,
    duplicates: dict[int, str],
    batch_id: str,
    passed: bool,
    mongo_db: str | None,
    reads: list[bytes] | None = None,
) -> PartLoad:
    """Pass 2 on a worker: read and validate again, add the duplicate verdicts, then
    write (MongoDB, `mongo_db` set) or hand back (embedded store).

    `reads`: pass 1's digests of the part's reading (the bytes must be the same). The
    client submits a part after the parts holding rows of the same ids were applied."""
    store = worker_store(mongo_db) if mongo_db else None
    out = PartLoad()
    check = part.check()
    if reads and part.span is None:
        check.reads, check.complete = list(reads), True
    try:
        for chunk in _part_chunks(part, spec, chunk_rows, check):
            result = validate_chunk(chunk.frame, spec)
            valid = result.valid
            local = chunk.first_row + valid.index.to_numpy(dtype=np.int64)
            dup = np.fromiter((r in duplicates for r in local.tolist()), bool, len(local))
            issues = result.issues
            if dup.any():
                ids = valid[spec.id_column].tolist()
                extra = pd.DataFrame(
                    [
                        (int(valid.index[k]), spec.id_column, ids[k], duplicates[int(local[k])])
                        for k in np.flatnonzero(dup).tolist()
                    ],
                    columns=["pos", "column", "value", "reason"],
                )
                issues = pd.concat([issues, extra], ignore_index=True)
            origin = FileOrigin(
                part.path, part.sha256, first_row + chunk.first_row - 1, chunk.line_offset
            )
            quarantine = quarantine_docs(chunk.frame, issues, origin, batch_id)
            accepted = valid[~dup]
            absent = absence(chunk.frame, chunk.absent, spec)
            out.quarantined += len(quarantine)
            if store is None:
                out.quarantine.extend(quarantine)
                if passed and len(accepted):
                    out.accepted.append((accepted, origin, absent))
                continue
            if quarantine:
                store.put(quarantine_collection(spec.name), quarantine)
            if passed and len(accepted):
                counts = load_valid(store, spec, accepted, origin, batch_id, absent)
                out.inserted += counts.inserted
                out.updated += counts.updated
                out.unchanged += counts.unchanged
    finally:
        if store is not None:
            store.close()
    return out


ProgressFn = Callable[[str, int, int | None], None]


def run_etl_dask(
    spec: DatasetSpec,
    source: Path | FileSource,
    store: Store,
    client: Any,
    *,
    mongo_db: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    part_bytes: int = PART_BYTES,
    max_rejected_share: float = MAX_REJECTED_SHARE,
    progress: ProgressFn | None = None,
    lock_wait: float = 0.0,
    lock_lease: float = LOCK_LEASE,
) -> EtlSummary:
    """`run_etl` on the Dask cluster of `client` (a `distributed.Client`).

    `mongo_db` set: workers write to that MongoDB database themselves; None: the client
    writes what they hand back (the embedded store)."""
    from distributed import as_completed

    if mongo_db is None:
        mongo_db = worker_database(store)
    report = progress or (lambda phase, done, total: None)
    with batch_run(spec, source, store, lock_wait, lock_lease) as (summary, files):
        parts = plan_parts(files, part_bytes)
        logger.info(
            "etl batch %s on Dask: %d file(s) in %d part(s)",
            summary.batch_id,
            len(summary.files),
            len(parts),
        )
        # Pass 1: validate and count on the workers; nothing is written.
        checks: list[PartCheck] = [PartCheck()] * len(parts)
        futures = client.map(check_part, parts, spec=spec, chunk_rows=chunk_rows, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            checks[i] = future.result()
            future.release()
            summary.rows_read += checks[i].rows
            report("validate", summary.rows_read, None)
        first_rows, duplicates, after = _duplicate_rule(parts, checks, summary)
        passed = checked(summary, spec, store, max_rejected_share)

        # Pass 2: quarantine always; rows only when the run passed. A part holding ids of
        # an earlier part (rows that complete one another) is submitted once that part is
        # applied: the order lives on the client, so a worker lost mid-run only makes the
        # scheduler run its unfinished parts again (upserts: nothing doubles).
        def submit(part: FilePart) -> Any:
            return client.submit(
                load_part,
                part,
                spec,
                chunk_rows,
                first_rows[part.index],
                duplicates[part.index],
                summary.batch_id,
                passed,
                mongo_db,
                checks[part.index].reads,
                pure=False,
            )

        _take_loads(parts, submit, after, checks, spec, store, summary, report)
        refuse_if_failed(summary, spec, passed, max_rejected_share)
    return summary


def _take_loads(
    parts: list[FilePart],
    submit: Callable[[FilePart], Any],
    after: dict[int, list[int]],
    checks: list[PartCheck],
    spec: DatasetSpec,
    store: Store,
    summary: EtlSummary,
    report: ProgressFn,
) -> None:
    """Pass 2 on the client: each part submitted once the parts it waits for (`after`)
    are applied, and its counts (for the embedded store its rows and quarantine, written
    here, the one writer of its file) taken as it completes, so parts that share ids are
    applied in the local engine's order."""
    from distributed import as_completed

    applied: set[int] = set()
    waiting = [part for part in parts if after[part.index]]
    index: dict[Any, int] = {}
    completed = as_completed()
    for part in parts:
        if not after[part.index]:
            future = submit(part)
            index[future.key] = part.index
            completed.add(future)
    done = 0
    for future in completed:
        i = index.pop(future.key)
        loaded: PartLoad = future.result()
        future.release()
        if loaded.quarantine:
            store.put(quarantine_collection(spec.name), loaded.quarantine)
        for accepted, origin, absent in loaded.accepted:
            counts = load_valid(store, spec, accepted, origin, summary.batch_id, absent)
            loaded.inserted += counts.inserted
            loaded.updated += counts.updated
            loaded.unchanged += counts.unchanged
        summary.quarantined += loaded.quarantined
        summary.inserted += loaded.inserted
        summary.updated += loaded.updated
        summary.unchanged += loaded.unchanged
        done += checks[i].rows
        report("load", done, summary.rows_read)
        applied.add(i)
        ready = [part for part in waiting if applied.issuperset(after[part.index])]
        for part in ready:
            waiting.remove(part)
            future = submit(part)
            index[future.key] = part.index
            completed.add(future)
    if waiting:  # cannot happen: `after` names earlier parts only
        raise MlcycleError(f"{len(waiting)} part(s) were never loaded: their order is circular")


def _duplicate_rule(
    parts: list[FilePart], checks: list[PartCheck], summary: EtlSummary
) -> tuple[dict[int, int], dict[int, dict[int, str]], dict[int, list[int]]]:
    """The first occurrence of an id wins, in part order: per part, the row number of
    its first row in its file, {row within the part: reason} for the duplicates, and the
    earlier parts it shares accepted ids with (rows that complete one another: the same
    id with other columns). Per-file counts are filled in on the way."""
    tracker = DuplicateTracker()
    seen = DuplicateTracker()  # ids only: which part first accepted each
    first_rows: dict[int, int] = {}
    duplicates: dict[int, dict[int, str]] = {}
    after: dict[int, list[int]] = {}
    next_row: dict[int, int] = {}
    current_file = -1
    for part, check in zip(parts, checks, strict=True):
        info = summary.files[part.file_no]
        if part.file_no != current_file:
            current_file = part.file_no
            tracker.parts.append(Path(part.path).name)
        first = next_row.get(part.file_no, 1)
        first_rows[part.index] = first
        next_row[part.file_no] = first + check.rows
        mixed = with_column_set(check.h2, check.codes)
        accept, where = tracker.check(check.h1, mixed, first - 1 + check.local_rows)
        duplicates[part.index] = {int(check.local_rows[k]): reason for k, reason in where.items()}
        after[part.index] = seen.earlier_parts(check.h1[accept], check.h2[accept], part.index)
        info.rows += check.rows
        info.rejected += check.rejected + len(where)
        info.dropped += check.dropped
        info.valid += int(accept.sum())
    return first_rows, duplicates, after


__all__ = ["PART_BYTES", "check_part", "load_part", "run_etl_dask"]


def worker_database(store: Store) -> str | None:
    """The MongoDB database the workers write to themselves; None for the embedded store,
    whose one writer is the client."""
    from mlcycle.store.mongo import MongoStore

    return store.db.name if isinstance(store, MongoStore) else None


def read_range(
    mongo_db: str,
    dataset: str,
    schema: pa.Schema,
    require: str | None,
    id_range: tuple[Any, Any],
) -> pa.Table:
    """On a worker: the snapshot rows whose `_id` is in one range, as Arrow columns."""
    store = worker_store(mongo_db)
    try:
        return store.read_columns(dataset, schema, require=require, id_range=id_range)  # type: ignore[call-arg]
    finally:
        store.close()


def id_ranges(store: Any, dataset: str, parts: int) -> list[tuple[Any, Any]]:
    """About `parts` consecutive `_id` ranges of a MongoDB dataset, in id order (None:
    open-ended), for the workers to read one each."""
    cuts = [None, *store.id_bounds(dataset, parts), None]
    return list(itertools.pairwise(cuts))


def read_columns_dask(
    store: Store,
    client: Any,
    dataset: str,
    schema: pa.Schema,
    require: str | None,
    parts: int,
) -> pa.Table:
    """The training snapshot read by the workers in parallel `_id` ranges (MongoDB);
    the embedded store, one local file, is read here."""
    from mlcycle.store import columns
    from mlcycle.store.mongo import MongoStore

    if not isinstance(store, MongoStore):
        return store.read_columns(dataset, schema, require=require)
    ranges = id_ranges(store, dataset, parts)
    futures = [
        client.submit(read_range, store.db.name, dataset, schema, require, r, pure=False)
        for r in ranges
    ]
    tables = [f.result() for f in futures]
    logger.info("snapshot read in %d id range(s) by the workers", len(ranges))
    return columns.concat(tables, schema)
