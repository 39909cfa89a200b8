"""Extract: read CSV, JSON, JSONL and Parquet files as chunks of raw string values.

Every chunk is a DataFrame whose cells are `str` or missing, plus the 1-based number of
its first data row, so validation can name the file, row and column of every problem.
Large files are read in chunks of `chunk_rows`, so memory stays bounded (a JSON array is
the exception: it is one document, read whole; use JSONL for large inputs).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlcycle.errors import StructuralError
from mlcycle.spec import DatasetSpec

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")
RECORD_ERROR = "__record_error__"
"""Column that carries a per-record parse error (e.g. a JSONL line that is not JSON)."""


@dataclass(frozen=True)
class RawChunk:
    """A slice of one file: raw values, and the data-row number of its first row."""

    path: Path
    first_row: int
    frame: pd.DataFrame
    line_offset: int = 1
    """Line of a row = row + line_offset (1 for a CSV header line, 0 for JSONL)."""


def data_files(folder: Path) -> list[Path]:
    """Entries of `folder` (not recursive) whose name has a supported suffix, sorted.
    Folders that happen to be named like data files are left out."""
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise StructuralError(f"{folder}: cannot list the folder: {err.strerror}") from err
    return sorted(
        p
        for p in entries
        if p.suffix.lower() in SUPPORTED_SUFFIXES and not (p.is_dir() and not p.is_symlink())
    )


def _readable(path: Path) -> None:
    """A clear StructuralError for a path that cannot be read as a file."""
    try:
        if path.is_symlink():
            path.resolve(strict=True)
        if not path.is_file():
            raise StructuralError(f"{path}: not a regular file")
        with path.open("rb"):
            pass
    except RuntimeError as err:  # a symlink loop (Python < 3.13)
        raise StructuralError(f"{path}: a symlink loop") from err
    except OSError as err:
        reason = "a symlink loop" if err.errno == 40 else err.strerror or str(err)
        if isinstance(err, FileNotFoundError) and path.is_symlink():
            reason = "a dangling symlink (its target does not exist)"
        raise StructuralError(f"{path}: cannot read: {reason}") from err


def discover(source: Path) -> list[Path]:
    """The supported files at `source` (a file, or a folder searched non-recursively).

    Every one is checked readable first, so a bad entry stops the run before anything
    is written; a folder without data files is an error that says how to get some."""
    if source.is_dir():
        files = data_files(source)
        if not files:
            raise StructuralError(
                f"{source}: no data files (CSV, JSON, JSONL or Parquet). Put your files "
                "there, or run `mlcycle demo-data` for a synthetic table"
            )
    elif source.exists() or source.is_symlink():
        if source.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise StructuralError(
                f"{source}: unsupported file type {source.suffix!r}; "
                f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
            )
        files = [source]
    else:
        hint = " (run `mlcycle demo-data` for a synthetic table)" if source.name == "raw" else ""
        raise StructuralError(f"{source}: no such file or folder{hint}")
    for path in files:
        _readable(path)
    return files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_columns(path: Path, columns: list[str], spec: DatasetSpec) -> None:
    """Raise a StructuralError for a missing required column or a wrong delimiter."""
    present = set(columns)
    missing = [c for c in spec.required_columns if c not in present]
    if not missing:
        return
    if len(columns) == 1:
        header = columns[0]
        for delim, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if delim in header:
                raise StructuralError(
                    f"{path}: the header has a single column {header[:60]!r}; the file looks "
                    f"{name}-delimited but CSV files must be comma-delimited"
                )
    raise StructuralError(
        f"{path}: missing required column(s) {', '.join(missing)} "
        f"(found: {', '.join(columns) or 'none'})"
    )


def _read_csv(
    path: Path,
    spec: DatasetSpec,
    chunk_rows: int,
    span: tuple[int, int] | None = None,
) -> Iterator[RawChunk]:
    """A CSV file, or the records in bytes [start, end) of it (`span`, cut at record
    boundaries by `mlcycle.etl.partitions`) read as if they followed the header line."""

    def open_text() -> io.TextIOBase:
        if span is None:
            return path.open("r", encoding="utf-8-sig", newline="")
        return _span_text(path, span)

    try:
        with open_text() as fh:
            header_line = fh.readline()
    except UnicodeDecodeError as err:
        raise StructuralError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not header_line.strip():
        raise StructuralError(f"{path}: empty file (no header line)")
    header = [h.strip() for h in next(csv.reader(io.StringIO(header_line)))]
    _check_columns(path, header, spec)
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise StructuralError(f"{path}: duplicate column name(s) {', '.join(dupes)}")
    wanted = [c for c in header if c in spec.columns]
    try:
        with open_text() as data, open_text() as raw:
            reader = pd.read_csv(
                data,
                dtype="string",
                keep_default_na=False,
                na_filter=False,
                chunksize=chunk_rows,
                skip_blank_lines=True,
                index_col=False,
            )
            first = 1
            widths = _field_counts(raw)
            while True:
                with warnings.catch_warnings():
                    # a first row longer than the header only warns; make it the error it is
                    warnings.simplefilter("error", pd.errors.ParserWarning)
                    frame = next(reader, None)
                if frame is None:
                    break
                frame.columns = header
                shape = np.array(list(itertools.islice(widths, len(frame))), dtype=np.int64)
                shape = shape.reshape(-1, 2)
                yield RawChunk(path, first, _row_checks(frame, wanted, shape), line_offset=1)
                first += len(frame)
    except UnicodeDecodeError as err:
        raise StructuralError(f"{path}: not UTF-8 text ({err.reason})") from err
    except (pd.errors.ParserError, pd.errors.ParserWarning, csv.Error) as err:
        raise StructuralError(f"{path}: malformed CSV: {err}") from err


def _span_text(path: Path, span: tuple[int, int]) -> io.StringIO:
    """The header line and the bytes of `span`, as one text (a part of a big file)."""
    start, end = span
    with path.open("rb") as fh:
        header = fh.readline()
        fh.seek(start)
        body = fh.read(end - start)
    return io.StringIO(header.decode("utf-8-sig") + body.decode("utf-8"), newline="")


MAX_FIELD_CHARS = 1_000_000
"""A field longer than this is cut to an excerpt as soon as it is read (its row is
rejected), so one huge value does not cost its size again at every validation step."""


def _field_counts(handle: io.TextIOBase) -> Iterator[tuple[int, int]]:
    """(fields, characters) per record after the header, blank lines skipped as the
    reader skips them. The CSV reader pads a short row with empty strings,
    indistinguishable from real empty fields, so the count is taken apart (the csv
    module: ~1.5 µs a row)."""
    csv.field_size_limit(2**31 - 1)  # a huge field is a row problem, not a reader crash
    records = csv.reader(handle)
    next(records, None)
    return ((len(rec), sum(map(len, rec))) for rec in records if rec)


def _row_checks(frame: pd.DataFrame, wanted: list[str], shape: np.ndarray) -> pd.DataFrame:
    """The spec's columns, plus a record error for rows with fewer fields than the header
    (a cut or malformed line: its padded empty values must never pass as real values)
    and for rows with a field over MAX_FIELD_CHARS (cut to an excerpt here)."""
    out = frame[wanted].copy() if (shape[:, 1] > MAX_FIELD_CHARS).any() else frame[wanted]
    width = frame.shape[1]
    problems: dict[int, str] = {}
    for short in np.flatnonzero(shape[:, 0] < width).tolist():
        problems[short] = (
            f"the row has {shape[short, 0]} field(s) but the header has {width}: "
            "a cut or malformed line"
        )
    for row in np.flatnonzero(shape[:, 1] > MAX_FIELD_CHARS).tolist():
        for j, name in enumerate(wanted):
            value = out.iat[row, j]
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
                problems[row] = (
                    f"column {name}: a value of {len(value):,} characters (over "
                    f"{MAX_FIELD_CHARS:,}; sha256 {digest})"
                )
                out.iat[row, j] = value[:256]
    if problems:
        out = out.copy()
        errors = pd.Series(pd.NA, index=out.index, dtype="string")
        for pos, text in problems.items():
            errors.iat[pos] = text
        out[RECORD_ERROR] = errors
    return out


def records_frame(records: list[object], spec: DatasetSpec, first: int) -> pd.DataFrame:
    """Build a raw frame from parsed JSON values; non-objects become record errors.

    Column by column: strings pass as they are, booleans and numbers take their text
    form, nested values their JSON text (validation rejects them: they match no scalar
    type). ~10x faster than a frame of per-row dicts mapped cell by cell."""
    empty: dict[str, object] = {}
    objects = [rec if isinstance(rec, dict) else empty for rec in records]
    data: dict[str, object] = {}
    for col in spec.columns:
        values = [rec.get(col) for rec in objects]
        texts = [v if type(v) is str or v is None else _scalar_text(v) for v in values]
        data[col] = pd.array(texts, dtype="string")
    errors: list[str | None] = [None] * len(records)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            kind = "a JSON " + type(rec).__name__ if rec is not None else "null"
            errors[i] = f"record {first + i} is {kind}, not an object"
    data[RECORD_ERROR] = pd.array(errors, dtype="string")
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)))


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _present_columns(path: Path, records: list[object], spec: DatasetSpec) -> None:
    seen: set[str] = set()
    for rec in records:
        if isinstance(rec, dict):
            seen.update(rec)
    if records:
        _check_columns(path, sorted(seen), spec)


def json_records(path: Path) -> list[object]:
    """The records of a JSON file: an array, or an object with a "records" array."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as err:
        raise StructuralError(f"{path}: not valid JSON: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise StructuralError(f"{path}: expected a JSON array of objects (or JSONL)")
    return data


def _read_json(path: Path, spec: DatasetSpec, chunk_rows: int) -> Iterator[RawChunk]:
    data = json_records(path)
    _present_columns(path, data, spec)
    for start in range(0, len(data), chunk_rows):
        part = data[start : start + chunk_rows]
        yield RawChunk(path, start + 1, records_frame(part, spec, start + 1), 0)


def _read_jsonl(
    path: Path, spec: DatasetSpec, chunk_rows: int, span: tuple[int, int] | None = None
) -> Iterator[RawChunk]:
    checked = False
    first = 1
    batch: list[object] = []
    with path.open("rb") as handle:
        fh: Iterable[bytes] = handle
        if span is not None:
            handle.seek(span[0])
            fh = io.BytesIO(handle.read(span[1] - span[0]))
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                batch.append({})  # keeps numbering aligned; rejected as an empty record
                continue
            try:
                batch.append(orjson.loads(raw))
            except orjson.JSONDecodeError as err:
                batch.append(f"line {lineno}: not valid JSON ({err})")
            if len(batch) >= chunk_rows:
                if not checked:
                    _present_columns(path, batch, spec)
                    checked = True
                yield RawChunk(path, first, _jsonl_frame(batch, spec, first), 0)
                first += len(batch)
                batch = []
    if batch:
        if not checked:
            _present_columns(path, batch, spec)
        yield RawChunk(path, first, _jsonl_frame(batch, spec, first), 0)


def _jsonl_frame(batch: list[object], spec: DatasetSpec, first: int) -> pd.DataFrame:
    frame = records_frame(batch, spec, first)
    for i, rec in enumerate(batch):
        if isinstance(rec, str):  # the decode error recorded above
            frame.loc[i, RECORD_ERROR] = rec
        elif isinstance(rec, dict) and not rec:
            frame.loc[i, RECORD_ERROR] = "empty line"
    return frame


def _read_parquet(path: Path, spec: DatasetSpec, chunk_rows: int) -> Iterator[RawChunk]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise StructuralError(f"{path}: not a readable Parquet file: {err}") from err
    names = list(pf.schema_arrow.names)
    _check_columns(path, names, spec)
    wanted = [c for c in names if c in spec.columns]
    for name in wanted:
        kind = pf.schema_arrow.field(name).type
        if pa.types.is_nested(kind) or (
            pa.types.is_dictionary(kind) and pa.types.is_nested(kind.value_type)
        ):
            raise StructuralError(
                f"{path}: column {name} holds nested values ({kind}); the spec's columns take "
                "one scalar value per row"
            )
    first = 1
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
            arrays = {}
            errors = pd.Series(pd.NA, index=pd.RangeIndex(batch.num_rows), dtype="string")
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                arrays[name] = _parquet_text(name, column, errors)
            frame = pa.table(arrays).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
            if errors.notna().any():
                frame[RECORD_ERROR] = errors
            yield RawChunk(path, first, frame, 0)
            first += len(frame)
    except (pa.ArrowInvalid, OSError) as err:
        raise StructuralError(f"{path}: not a readable Parquet file: {err}") from err


_EXACT_FLOAT = float(2**53)
"""Floats at or beyond 2^53 cannot hold every whole number: never printed as integers."""


def _parquet_text(name: str, column: pa.Array, errors: pd.Series) -> pa.Array:
    """One Parquet column as text, the way a CSV would spell it: NaN is missing, whole
    floats lose ".0", booleans are true/false; bytes that are not UTF-8 mark the row."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "true", "false")
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        whole = pc.and_(pc.less(pc.abs(column), _EXACT_FLOAT), pc.equal(pc.floor(column), column))
        as_int = pc.cast(pc.if_else(whole, column, pa.scalar(0.0, column.type)), pa.int64())
        return pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(column, pa.string()))
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        texts: list[str | None] = []
        for i, raw in enumerate(column.to_pylist()):
            try:
                texts.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
                errors.iloc[i] = f"column {name}: bytes that are not UTF-8 text"
        return pa.array(texts, type=pa.string())
    if pa.types.is_string(column.type):
        return column
    return pc.cast(column, pa.string())


SPLITTABLE = (".csv", ".jsonl", ".ndjson")
"""Formats whose records can be read from a byte range (see `mlcycle.etl.partitions`)."""


def read_file(
    path: Path, spec: DatasetSpec, chunk_rows: int, span: tuple[int, int] | None = None
) -> Iterator[RawChunk]:
    """Yield the chunks of one file, or of the records in the byte range `span` of a CSV
    or JSONL file (numbered from 1 within it); a structural problem raises StructuralError."""
    suffix = path.suffix.lower()
    logger.debug("extracting %s%s", path, f" bytes {span[0]}-{span[1]}" if span else "")
    if span is not None and suffix not in SPLITTABLE:
        raise StructuralError(f"{path}: a {suffix} file is read whole, not by byte range")
    if suffix == ".csv":
        return _read_csv(path, spec, chunk_rows, span)
    if suffix == ".json":
        return _read_json(path, spec, chunk_rows)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, spec, chunk_rows, span)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, spec, chunk_rows)
    raise StructuralError(f"{path}: unsupported file type {suffix!r}")
