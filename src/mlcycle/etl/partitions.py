"""Cut files into parts a distributed engine can read independently.

A CSV or JSONL file larger than `part_bytes` is cut at record boundaries into byte
ranges; other files (and small ones) are one part each. A CSV record boundary is a
newline outside quotes: the file is scanned once with numpy, and a newline counts when
the number of `"` before it is even (RFC 4180 escapes a quote as `""`, which keeps the
parity). Row numbers are not known until a part is read (blank lines are skipped): the
engine numbers rows by adding up the rows of the parts before.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlcycle.etl.extract import SPLITTABLE
from mlcycle.etl.reading import FileCheck, changed
from mlcycle.etl.sources import FileSource

SCAN_BLOCK = 16 * 1024 * 1024


@dataclass(frozen=True)
class FilePart:
    """One part: a whole file (`span` None) or the records in a byte range of it."""

    index: int
    """Order of the part in the run: files in name order, ranges in file order."""
    file_no: int
    path: str
    """Absolute: a worker reads the file the client named, wherever it runs."""
    sha256: str
    """The whole file's, as the lineage names it."""
    size: int = 0
    """The whole file's size, checked by the worker before it reads."""
    digest: str = ""
    """SHA-256 of the bytes this part reads: the whole file's, or for a range the
    header line (CSV) and the range's bytes. A worker that sees other bytes fails."""
    span: tuple[int, int] | None = None

    def check(self) -> FileCheck:
        return FileCheck(self.size, self.digest or self.sha256)


def _header_end(path: Path) -> int:
    with path.open("rb") as fh:
        fh.readline()
        return fh.tell()


def record_boundaries(path: Path, targets: list[int], quoted: bool) -> list[int]:
    """For each target byte offset, the offset just after the first record-ending
    newline at or after it (the file size when there is none)."""
    out: list[int] = []
    if not targets:
        return out
    pending = sorted(targets)
    parity = 0
    offset = 0
    with path.open("rb") as fh:
        while pending:
            block = fh.read(SCAN_BLOCK)
            if not block:
                break
            data = np.frombuffer(block, dtype=np.uint8)
            newlines = np.flatnonzero(data == 10)
            if quoted:
                quotes = np.cumsum(data == 34, dtype=np.int64)
                even = (quotes[newlines] + parity) % 2 == 0
                parity = int((parity + quotes[-1]) % 2)
                newlines = newlines[even]
            ends = newlines + offset + 1
            while pending and len(ends):
                k = int(np.searchsorted(ends, pending[0] + 1, side="left"))
                if k == len(ends):
                    break
                out.append(int(ends[k]))
                pending.pop(0)
            offset += len(block)
    size = path.stat().st_size
    out.extend(size for _ in pending)
    return out


def span_digests(path: Path, spans: list[tuple[int, int]], header: bool, sha256: str) -> list[str]:
    """SHA-256 of what each part reads (the header line for CSV, then the bytes of its
    span), from one reading of the file that must also give the run's `sha256`."""
    whole = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.readline() if header else b""
        fh.seek(0)
        digests = []
        offset = 0
        for lo, hi in spans:
            part = hashlib.sha256(head)
            while offset < hi:
                block = fh.read(min(hi - offset, SCAN_BLOCK))
                if not block:
                    break
                whole.update(block)
                if offset + len(block) > lo:
                    part.update(block[max(lo - offset, 0) :])
                offset += len(block)
            digests.append(part.hexdigest())
        for block in iter(lambda: fh.read(SCAN_BLOCK), b""):
            whole.update(block)
    if whole.hexdigest() != sha256:
        raise changed(path, "its bytes differ from those hashed when the run started")
    return digests


def plan_parts(source: FileSource, part_bytes: int) -> list[FilePart]:
    parts: list[FilePart] = []
    for file_no, (path, info) in enumerate(zip(source.paths, source.open(), strict=True)):
        size = info.size
        suffix = path.suffix.lower()
        if suffix not in SPLITTABLE or size <= part_bytes:
            parts.append(FilePart(len(parts), file_no, info.path, info.sha256, size, info.sha256))
            continue
        csv_file = suffix == ".csv"
        start = _header_end(path) if csv_file else 0
        targets = list(range(start + part_bytes, size, part_bytes))
        cuts = record_boundaries(path, targets, quoted=csv_file)
        edges = sorted({start, *cuts, size})
        spans = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]
        digests = span_digests(path, spans, csv_file, info.sha256)
        for span, digest in zip(spans, digests, strict=True):
            parts.append(FilePart(len(parts), file_no, info.path, info.sha256, size, digest, span))
    return parts


__all__ = ["FilePart", "plan_parts", "record_boundaries"]
