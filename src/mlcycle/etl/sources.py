"""Where rows come from: one validate -> transform -> load path serves every source.

A source yields `RawChunk`s (raw string values, see `extract`), each with an *origin*
that says, for every row of the chunk, where it came from: a file, its SHA-256 and its
row; or a Kafka topic, partition and offset. The origin names quarantine entries
(stable ids, so a rerun overwrites rather than duplicates them) and the `_source`
lineage field of every stored row.

- `FileSource`: CSV, JSON, JSONL and Parquet files (a file, or a folder's files). It is
  re-readable, which the batch ETL's two passes need.
- `mlcycle.stream.consumer` builds chunks from Kafka messages with a `TopicOrigin`.
- A distributed engine gets partitions of the same files (`FileSource.parts`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from mlcycle.etl.extract import RawChunk, discover, read_file
from mlcycle.etl.reading import FileCheck, measure
from mlcycle.spec import DatasetSpec

SOURCE_FIELD = "_source"
"""Lineage of a stored row: `file:<sha256 prefix>:<row>` or `kafka:<topic>:<partition>:<offset>`."""


class Origin(Protocol):
    """Where each row of one chunk came from (`pos`: the row's position in the chunk)."""

    def quarantine_id(self, pos: int) -> str: ...

    def describe(self, pos: int) -> dict[str, Any]:
        """Fields of a quarantine entry that locate the row."""
        ...

    def refs(self, positions: Sequence[int]) -> list[str]:
        """The `_source` lineage value of each row."""
        ...


@dataclass(frozen=True)
class FileOrigin:
    path: str
    sha256: str
    first_row: int
    line_offset: int

    def quarantine_id(self, pos: int) -> str:
        return f"{self.sha256[:16]}:{self.first_row + pos}"

    def describe(self, pos: int) -> dict[str, Any]:
        row = self.first_row + pos
        return {
            "file": self.path,
            "file_sha256": self.sha256,
            "row": row,
            "line": row + self.line_offset,
        }

    def refs(self, positions: Sequence[int]) -> list[str]:
        prefix = f"file:{self.sha256[:16]}:"
        first = self.first_row
        return [prefix + str(first + p) for p in positions]


@dataclass(frozen=True)
class TopicOrigin:
    topic: str
    partitions: Sequence[int]
    offsets: Sequence[int]
    keys: Sequence[str | None]

    def quarantine_id(self, pos: int) -> str:
        return f"kafka:{self.topic}:{self.partitions[pos]}:{self.offsets[pos]}"

    def describe(self, pos: int) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": int(self.partitions[pos]),
            "offset": int(self.offsets[pos]),
            "key": self.keys[pos],
        }

    def refs(self, positions: Sequence[int]) -> list[str]:
        prefix = f"kafka:{self.topic}:"
        parts, offsets = self.partitions, self.offsets
        return [f"{prefix}{parts[p]}:{offsets[p]}" for p in positions]


@dataclass
class FileSummary:
    path: str
    sha256: str
    size: int = 0
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class SourceChunk:
    """A chunk and the part (file) it belongs to, for per-file counts."""

    part: FileSummary
    chunk: RawChunk
    origin: Origin


class FileSource:
    """Files at a path (a file, or a folder's supported files, not recursive).

    Construction checks every file is readable, so a bad entry stops a run before the
    store is touched; `open()` hashes them (the SHA-256 is part of the lineage), and
    every later reading is checked against that hash (`mlcycle.etl.reading`). Paths are
    absolute, so whoever reads a part (a Dask worker elsewhere) reads the same file."""

    kind = "files"

    def __init__(self, path: Path) -> None:
        self.root = path
        self.paths = [p.absolute() for p in discover(path)]
        self.parts: list[FileSummary] = []
        self.checks: list[FileCheck] = []

    def __repr__(self) -> str:
        return f"FileSource({str(self.root)!r})"

    def open(self) -> list[FileSummary]:
        if not self.parts:
            self.checks = [measure(p) for p in self.paths]
            self.parts = [
                FileSummary(str(p), c.sha256, c.size)
                for p, c in zip(self.paths, self.checks, strict=True)
            ]
        return self.parts

    def chunks(self, spec: DatasetSpec, chunk_rows: int) -> Iterator[SourceChunk]:
        parts = self.open()
        for path, part, check in zip(self.paths, parts, self.checks, strict=True):
            for chunk in read_file(path, spec, chunk_rows, check=check):
                origin = FileOrigin(part.path, part.sha256, chunk.first_row, chunk.line_offset)
                yield SourceChunk(part, replace(chunk, path=path), origin)


__all__ = [
    "SOURCE_FIELD",
    "FileOrigin",
    "FileSource",
    "FileSummary",
    "Origin",
    "SourceChunk",
    "TopicOrigin",
]
