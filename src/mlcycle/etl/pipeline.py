"""The batch ETL run: a re-readable source (files) -> validate -> quarantine / upsert,
with a batch record.

Two passes keep failed runs harmless and memory bounded: the first validates everything
and counts (a structural problem stops the run before anything is written; a rejected
share above the threshold fails it with only the quarantine written), the second writes.
Small inputs are validated once and kept in memory between the passes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlcycle import __version__
from mlcycle.config import CHUNK_ROWS, LOCK_LEASE, MAX_REJECTED_SHARE
from mlcycle.errors import MlcycleError, RejectedShareExceeded, StoreUnavailable
from mlcycle.etl.sources import FileSource, FileSummary, Origin
from mlcycle.etl.steps import (
    EXCERPT_CHARS,
    DuplicateTracker,
    absence,
    column_set_codes,
    excerpt,
    load_valid,
    now_ms,
    quarantine_docs,
)
from mlcycle.rules.frames import validate_chunk
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import BATCHES, Document, Store, quarantine_collection
from mlcycle.store.lease import Lease

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int | None], None]
CACHE_ROWS = 2_000_000
"""Inputs up to this many rows are validated once and kept (compactly typed, ~120 bytes a
row) for the write pass; larger ones are read and validated again, so memory stays bounded."""


@dataclass
class EtlSummary:
    """What a run did; printed by the CLI and stored as the batch document."""

    batch_id: str
    dataset: str
    store: str
    spec_hash: str
    status: str = "running"
    files: list[FileSummary] = field(default_factory=list)
    rows_read: int = 0
    valid: int = 0
    rejected: int = 0
    dropped: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.rows_read if self.rows_read else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected_share"] = round(self.rejected_share, 6)
        return data


@dataclass
class _Checked:
    """One chunk after validation and the duplicate-id rule: what the write pass needs."""

    rows: int
    rejected: int
    dropped: int
    accepted: pd.DataFrame  # valid rows that are not duplicates
    quarantine: list[Document]
    origin: Origin
    absent: pd.DataFrame  # columns the source did not carry, by chunk position


def new_batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def _checked_chunks(
    source: FileSource, spec: DatasetSpec, chunk_rows: int, batch_id: str
) -> Iterator[tuple[FileSummary, _Checked]]:
    tracker = DuplicateTracker()
    part: FileSummary | None = None
    for item in source.chunks(spec, chunk_rows):
        if item.part is not part:
            part = item.part
            tracker.parts.append(Path(part.path).name)
        frame = item.chunk.frame
        result = validate_chunk(frame, spec)
        absent = absence(frame, item.chunk.absent, spec)
        codes = column_set_codes(absent, spec, result.valid.index)
        accept, dup_issues = tracker.split(
            item.chunk.first_row, result.valid, spec.id_column, codes
        )
        issues = (
            pd.concat([result.issues, dup_issues], ignore_index=True)
            if len(dup_issues)
            else result.issues
        )
        quarantine = quarantine_docs(frame, issues, item.origin, batch_id)
        yield (
            part,
            _Checked(
                rows=len(frame),
                rejected=len(quarantine),
                dropped=result.dropped,
                accepted=result.valid[accept],
                quarantine=quarantine,
                origin=item.origin,
                absent=absent,
            ),
        )


def run_etl(
    spec: DatasetSpec,
    source: Path | FileSource,
    store: Store,
    *,
    chunk_rows: int = CHUNK_ROWS,
    max_rejected_share: float = MAX_REJECTED_SHARE,
    cache_rows: int = CACHE_ROWS,
    progress: ProgressFn | None = None,
    lock_wait: float = 0.0,
    lock_lease: float = LOCK_LEASE,
) -> EtlSummary:
    """Extract every supported file at `source` (a path, or a `FileSource`), validate,
    and upsert into `store`.

    One run per dataset at a time (a lease in the store, see `mlcycle.store.lease`): a
    second run waits up to `lock_wait` seconds, then raises DatasetBusy. Raises
    StructuralError (nothing written but the batch record) and RejectedShareExceeded (only
    quarantine and the batch record written).
    """
    report = progress or (lambda phase, done, total: None)
    with batch_run(spec, source, store, lock_wait, lock_lease) as (summary, files):
        logger.info("etl batch %s: %d file(s)", summary.batch_id, len(summary.files))

        # Pass 1: validate and count; nothing is written.
        cache: list[tuple[FileSummary, _Checked]] | None = []
        for info, item in _checked_chunks(files, spec, chunk_rows, summary.batch_id):
            info.rows += item.rows
            info.rejected += item.rejected
            info.dropped += item.dropped
            info.valid += len(item.accepted)
            summary.rows_read += item.rows
            report("validate", summary.rows_read, None)
            if cache is not None:
                cache.append((info, item))
                if summary.rows_read > cache_rows:
                    cache = None  # too big to keep: the write pass reads the files again
        passed = checked(summary, spec, store, max_rejected_share)

        # Pass 2: quarantine always; rows only when the run passed.
        items = (
            iter(cache)
            if cache is not None
            else _checked_chunks(files, spec, chunk_rows, summary.batch_id)
        )
        done = 0
        for _info, item in items:
            if item.quarantine:
                store.put(quarantine_collection(spec.name), item.quarantine)
                summary.quarantined += len(item.quarantine)
            if passed and len(item.accepted):
                counts = load_valid(
                    store, spec, item.accepted, item.origin, summary.batch_id, item.absent
                )
                summary.inserted += counts.inserted
                summary.updated += counts.updated
                summary.unchanged += counts.unchanged
            done += item.rows
            report("load", done, summary.rows_read)
        refuse_if_failed(summary, spec, passed, max_rejected_share)
    return summary


@contextmanager
def batch_run(
    spec: DatasetSpec,
    source: Path | FileSource,
    store: Store,
    lock_wait: float,
    lock_lease: float,
) -> Iterator[tuple[EtlSummary, FileSource]]:
    """One batch ETL run, whatever the engine: the files (checked before the store is
    touched), the dataset's lease, and the batch record, written at the end whether the
    run succeeded or failed (with the error)."""
    started = time.perf_counter()
    summary = EtlSummary(
        batch_id=new_batch_id(),
        dataset=spec.name,
        store=store.name,
        spec_hash=spec.fingerprint,
        started_at=now_ms(),
    )
    files = source if isinstance(source, FileSource) else FileSource(source)
    lease = Lease(
        store,
        spec.name,
        summary.batch_id,
        lease_seconds=lock_lease,
        wait_seconds=lock_wait,
        on_takeover=lambda held: _mark_abandoned(store, spec, held),
    )
    with lease:
        try:
            summary.files = files.open()
            yield summary, files
            summary.status = "succeeded"
        except StoreUnavailable:
            raise  # the store is gone: recording the batch would only retry again
        except BaseException as err:
            summary.status = "failed"
            summary.error = (
                str(err) if isinstance(err, MlcycleError) else f"{type(err).__name__}: {err}"
            )
            _finish(store, summary, spec, started)
            raise
        _finish(store, summary, spec, started)


def checked(
    summary: EtlSummary, spec: DatasetSpec, store: Store, max_rejected_share: float
) -> bool:
    """After the validation pass: the totals, the running batch record, and whether the
    rejected share allows loading."""
    summary.valid = sum(f.valid for f in summary.files)
    summary.rejected = sum(f.rejected for f in summary.files)
    summary.dropped = sum(f.dropped for f in summary.files)
    store.put(BATCHES, [_batch_doc(summary, spec)])
    return summary.rejected_share <= max_rejected_share


def refuse_if_failed(
    summary: EtlSummary, spec: DatasetSpec, passed: bool, max_rejected_share: float
) -> None:
    if not passed:
        raise RejectedShareExceeded(
            f"{summary.rejected} of {summary.rows_read} rows rejected "
            f"({summary.rejected_share:.1%} > the allowed {max_rejected_share:.1%}); "
            f"nothing was loaded. See the quarantine collection "
            f"{quarantine_collection(spec.name)!r} (batch {summary.batch_id})."
        )


def _mark_abandoned(store: Store, spec: DatasetSpec, held: Document) -> None:
    """A run whose process died (its lease expired): its batch becomes failed, with the
    rows it wrote counted; a rerun converges (writes are idempotent)."""
    batch_id = str(held.get("owner"))
    found = store.find(BATCHES, {"_id": batch_id})
    doc: Document = found[0] if found else {"_id": batch_id, "dataset": spec.name}
    written = store.count(spec.name, {"_batch_id": batch_id})
    doc.update(
        {
            "status": "failed",
            "error": (
                f"abandoned: its process (pid {held.get('pid')} on {held.get('host')}) "
                "stopped renewing its lease; rerun the ETL to complete the load"
            ),
            "rows_written": written,
            "finished_at": now_ms(),
        }
    )
    store.put(BATCHES, [doc])
    logger.warning("batch %s was abandoned after writing %d row(s)", batch_id, written)


def _finish(store: Store, summary: EtlSummary, spec: DatasetSpec, started: float) -> None:
    summary.finished_at = now_ms()
    summary.seconds = round(time.perf_counter() - started, 3)
    _record_batch(store, summary, spec)


def _batch_doc(summary: EtlSummary, spec: DatasetSpec) -> Document:
    doc = summary.to_dict()
    doc["_id"] = summary.batch_id
    doc["spec_version"] = spec.version
    doc["mlcycle_version"] = __version__
    return doc


def _record_batch(store: Store, summary: EtlSummary, spec: DatasetSpec) -> None:
    """Best effort: a batch record must not hide the error that ended the run."""
    try:
        store.put(BATCHES, [_batch_doc(summary, spec)])
    except MlcycleError as err:
        logger.warning("could not record ETL batch %s: %s", summary.batch_id, err)


__all__ = ["EXCERPT_CHARS", "EtlSummary", "FileSummary", "excerpt", "run_etl"]
