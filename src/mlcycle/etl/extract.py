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
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlcycle.errors import StructuralError
from mlcycle.etl.reading import CheckedFile, FileCheck, changed, not_utf8
from mlcycle.rules.text import EXACT_FLOAT, TEXT_TYPES, number_text
from mlcycle.rules.values import RECORD_ERROR
from mlcycle.spec import DatasetSpec

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")


@dataclass(frozen=True)
class RawChunk:
    """A slice of one file: raw values, and the data-row number of its first row."""

    path: Path
    first_row: int
    frame: pd.DataFrame
    """Raw values as text (pandas' string dtype), except a Parquet number column of a
    number spec column: float64 (`rules.values.is_typed_numbers`), read without a trip
    through text; the rules treat it as the text `number_text` spells."""
    line_offset: int = 1
    """Line of a row = row + line_offset (1 for a CSV header line, 0 for JSONL)."""
    absent: pd.DataFrame | None = None
    """For records that may each carry other fields (JSON): True where a record does not
    carry a spec column at all (not even as null). A column missing from `frame` is
    absent from every row. Absent values never overwrite stored ones."""


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


CSV_BLOCK = 32 * 1024 * 1024
"""Bytes the CSV reader parses at a time; one record may not be longer."""
_STRING_COLUMNS = 4096
"""Columns typed as text without a second look at the header (more are handled too)."""


def _csv_options(
    columns: int, on_invalid: Callable[[pacsv.InvalidRow], str]
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    """pyarrow's CSV reader as this ETL reads: every field text, exactly as written (no
    null words, no type guessing), quoted newlines kept, the header as the first row."""
    return (
        pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK, autogenerate_column_names=True),
        pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        pacsv.ConvertOptions(
            column_types={f"f{i}": pa.string() for i in range(columns)},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            null_values=[],
        ),
    )


class _CsvRecords:
    """The records of one CSV text, from one reading of its bytes (pyarrow's parser).

    Rows whose field count differs from the header's are handed to `on_invalid` by the
    parser with their record number; they are put back in their places with a record
    error, so the values of every row and its field count come from the same parse. A
    record of only spaces and tabs is a blank line (skipped and not counted, like an
    empty one)."""

    def __init__(self, path: Path, handle: io.RawIOBase | io.BytesIO) -> None:
        self.path = path
        self.bad: dict[int, str] = {}
        self.blank: list[int] = []
        self.handle = handle

    def on_invalid(self, row: pacsv.InvalidRow) -> str:
        if row.number < 1:
            raise StructuralError(f"{self.path}: the CSV reader lost track of row numbers")
        if row.text.strip(" \t\r\n") == "":
            self.blank.append(row.number)
        else:
            self.bad[row.number] = row.text
        return "skip"

    def open(self) -> pacsv.CSVStreamingReader:
        columns = _STRING_COLUMNS
        while True:
            reader = pacsv.open_csv(self.handle, *_csv_options(columns, self.on_invalid))
            if len(reader.schema) <= columns:
                return reader
            columns = len(reader.schema)
            self.handle.seek(0)
            self.bad.clear()
            self.blank.clear()


def _csv_bytes(
    path: Path, span: tuple[int, int] | None, check: FileCheck | None
) -> io.RawIOBase | io.BytesIO:
    """The file checked while it is read, or the header line and the bytes of `span`
    (checked against the part's digest before any is parsed)."""
    if span is None:
        return CheckedFile(path, check, utf8=True)
    start = span[0]
    header, body = _span_bytes(path, span, check, with_header=True)
    try:
        (header + body).decode("utf-8")
    except UnicodeDecodeError as err:
        at = err.start if err.start < len(header) else start + err.start - len(header)
        raise not_utf8(path, at) from err
    return io.BytesIO(header + body)


def _span_bytes(
    path: Path, span: tuple[int, int], check: FileCheck | None, with_header: bool
) -> tuple[bytes, bytes]:
    """(the header line or b"", the bytes of `span`) of a part, checked against the size
    and digest the run planned for it (`partitions.span_digests`) before any is parsed."""
    start, end = span
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        header = fh.readline() if with_header else b""
        fh.seek(start)
        body = fh.read(end - start)
    if check is not None and (
        size != check.size or hashlib.sha256(header + body).hexdigest() != check.sha256
    ):
        raise changed(path, f"bytes {start:,}-{end:,} are not those the run planned")
    return header, body


def _read_csv(
    path: Path,
    spec: DatasetSpec,
    chunk_rows: int,
    span: tuple[int, int] | None = None,
    check: FileCheck | None = None,
) -> Iterator[RawChunk]:
    """A CSV file, or the records in bytes [start, end) of it (`span`, cut at record
    boundaries by `mlcycle.etl.partitions`) read as if they followed the header line."""
    handle = _csv_bytes(path, span, check)
    records = _CsvRecords(path, handle)
    try:
        reader = records.open()
        header: list[str] | None = None
        wanted: list[str] = []
        state = _Numbering()
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            if header is None:
                header, wanted = _csv_header(path, batch, spec)
                batch = batch.slice(1)
            yield from _csv_chunks(path, batch, header, wanted, records, state, chunk_rows)
        if header is None:
            raise StructuralError(f"{path}: empty file (no header line)")
        yield from _csv_chunks(path, None, header, wanted, records, state, chunk_rows)
        if isinstance(handle, CheckedFile):
            handle.finish()
    except pa.ArrowInvalid as err:
        raise _csv_error(path, err) from err
    finally:
        handle.close()


def _csv_error(path: Path, err: pa.ArrowInvalid) -> StructuralError:
    text = str(err)
    if "Empty CSV file" in text:
        return StructuralError(f"{path}: empty file (no header line)")
    if "UTF8" in text or "UTF-8" in text:
        return StructuralError(f"{path}: not UTF-8 text ({text.split(':')[-1].strip()})")
    if "straddling" in text or "block" in text.lower():
        return StructuralError(
            f"{path}: a record longer than {CSV_BLOCK // 2**20} MiB (or an unclosed quote "
            "that runs to the end of the file): the file cannot be read as CSV"
        )
    return StructuralError(f"{path}: malformed CSV: {text}")


def _csv_header(
    path: Path, batch: pa.RecordBatch, spec: DatasetSpec
) -> tuple[list[str], list[str]]:
    if batch.num_rows == 0:
        raise StructuralError(f"{path}: empty file (no header line)")
    names = spec.headers
    header = [str(col[0].as_py()).strip() for col in batch.columns]
    if len(header) == 1 and header[0] == "":
        raise StructuralError(f"{path}: empty file (no header line)")
    header = [names.get(h, h) for h in header]
    _check_columns(path, header, spec)
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise StructuralError(f"{path}: duplicate column name(s) {', '.join(dupes)}")
    return header, [c for c in header if c in spec.columns]


@dataclass
class _Numbering:
    next_record: int = 2
    """Record number (the header is 1) of the next row to place."""
    row: int = 1
    """Data row of the next row to place (blank records are not counted)."""


def _csv_chunks(
    path: Path,
    batch: pa.RecordBatch | None,
    header: list[str],
    wanted: list[str],
    records: _CsvRecords,
    state: _Numbering,
    chunk_rows: int,
) -> Iterator[RawChunk]:
    """The rows of `batch` with the rows the parser set aside before and between them
    put back in record order (`batch` None: those left after the last batch)."""
    skipped = sorted(n for n in (*records.bad, *records.blank) if n >= state.next_record)
    k = 0 if batch is None else batch.num_rows
    numbers = np.empty(0, dtype=np.int64)
    last = skipped[-1] if skipped else state.next_record - 1
    if batch is not None:
        span = np.arange(state.next_record, state.next_record + k + len(skipped), dtype=np.int64)
        numbers = span[~np.isin(span, skipped)][:k]
        last = int(numbers[-1]) if k else state.next_record - 1
    bad_numbers = sorted(n for n in records.bad if state.next_record <= n <= last)
    bad_texts = [records.bad.pop(n) for n in bad_numbers]
    records.blank[:] = [n for n in records.blank if n > last]
    state.next_record = last + 1
    if k == 0 and not bad_numbers:
        return
    frame = _csv_frame(batch, header, wanted, bad_texts)
    if bad_numbers:
        order = np.concatenate([numbers, np.asarray(bad_numbers, dtype=np.int64)])
        frame = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    for start in range(0, len(frame), chunk_rows):
        part = frame.iloc[start : start + chunk_rows].reset_index(drop=True)
        yield RawChunk(path, state.row, _long_fields(part, wanted), line_offset=1)
        state.row += len(part)


def _csv_frame(
    batch: pa.RecordBatch | None, header: list[str], wanted: list[str], bad_texts: list[str]
) -> pd.DataFrame:
    """Valid rows (from the batch), then the set-aside rows (their fields as parsed from
    their own text, with a record error), as raw text."""
    width = len(header)
    where = [header.index(name) for name in wanted]
    parts: list[pd.DataFrame] = []
    if batch is not None and batch.num_rows:
        table = pa.table([batch.column(i) for i in where], names=wanted)
        parts.append(table.to_pandas(types_mapper=TEXT_TYPES.get))
    if bad_texts:
        rows: list[list[str | None]] = []
        reasons: list[str] = []
        for text in bad_texts:
            fields = next(csv.reader(io.StringIO(text)), [])
            rows.append([fields[i] if i < len(fields) else None for i in where])
            reasons.append(
                f"the row has {len(fields)} field(s) but the header has {width}: "
                + ("a cut or malformed line" if len(fields) < width else "extra field(s)")
            )
        bad = pd.DataFrame(rows, columns=wanted, dtype="string")
        bad[RECORD_ERROR] = pd.array(reasons, dtype="string")
        parts.append(bad)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if RECORD_ERROR not in frame:
        return frame
    frame[RECORD_ERROR] = frame[RECORD_ERROR].astype("string")
    return frame


MAX_FIELD_CHARS = 1_000_000
"""A field longer than this is cut to an excerpt as soon as it is read (its row is
rejected), so one huge value does not cost its size again at every validation step."""


def _long_fields(frame: pd.DataFrame, wanted: list[str]) -> pd.DataFrame:
    """Rows with a field over MAX_FIELD_CHARS get a record error naming the column, and
    the field is cut to an excerpt."""
    longest = {name: frame[name].str.len().fillna(0).to_numpy() for name in wanted}
    if not any((v > MAX_FIELD_CHARS).any() for v in longest.values()):
        return frame
    out = frame.copy()
    if RECORD_ERROR not in out:
        out[RECORD_ERROR] = pd.Series(pd.NA, index=out.index, dtype="string")
    for j, name in enumerate(wanted):
        for row in np.flatnonzero(longest[name] > MAX_FIELD_CHARS).tolist():
            value = str(out.iat[row, j])
            digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            out.loc[row, RECORD_ERROR] = (
                f"column {name}: a value of {len(value):,} characters (over "
                f"{MAX_FIELD_CHARS:,}; sha256 {digest})"
            )
            out.iat[row, j] = value[:256]
    return out


def records_frame(records: list[object], spec: DatasetSpec, first: int) -> pd.DataFrame:
    """Build a raw frame from parsed JSON values; non-objects become record errors.

    Column by column: strings pass as they are, booleans and numbers take their text
    form, nested values their JSON text (validation rejects them: they match no scalar
    type). ~10x faster than a frame of per-row dicts mapped cell by cell."""
    empty: dict[str, object] = {}
    objects = [rec if isinstance(rec, dict) else empty for rec in records]
    data: dict[str, object] = {}
    for col, column in spec.columns.items():
        key = column.header or col
        values = [rec.get(key) for rec in objects]
        texts = [v if type(v) is str or v is None else _scalar_text(v) for v in values]
        data[col] = pd.array(texts, dtype="string")
    errors: list[str | None] = [None] * len(records)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            kind = "a JSON " + type(rec).__name__ if rec is not None else "null"
            errors[i] = f"record {first + i} is {kind}, not an object"
    data[RECORD_ERROR] = pd.array(errors, dtype="string")
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)))


def records_absent(records: list[object], spec: DatasetSpec) -> pd.DataFrame | None:
    """Per record and spec column: True where the record (an object) lacks the key."""
    flags: dict[str, np.ndarray] = {}
    for col, column in spec.columns.items():
        key = column.header or col
        missing = np.fromiter(
            (isinstance(rec, dict) and key not in rec for rec in records), bool, len(records)
        )
        if missing.any():
            flags[col] = missing
    return pd.DataFrame(flags, index=pd.RangeIndex(len(records))) if flags else None


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
        names = spec.headers
        _check_columns(path, sorted(names.get(k, k) for k in seen), spec)


JSON_MAX_BYTES = 64 * 1024 * 1024
"""A JSON array is one document, parsed whole (~8x its size in memory): larger files are
refused before they are read; JSONL is read a chunk of lines at a time, whatever its size."""
LINE_MAX_BYTES = 32 * 1024 * 1024
"""A JSONL line longer than this is a rejected record, skipped without being held."""


def json_records(path: Path, check: FileCheck | None = None) -> list[object]:
    """The records of a JSON file: an array, or an object with a "records" array."""
    size = path.stat().st_size
    if size > JSON_MAX_BYTES:
        raise StructuralError(
            f"{path}: a JSON file of {size / 2**20:,.0f} MiB is over the {JSON_MAX_BYTES // 2**20}"
            " MiB a JSON array may have (it is parsed whole); write it as JSONL (one record "
            "a line, .jsonl), which is read in chunks whatever its size"
        )
    with CheckedFile(path, check) as fh:
        data = fh.read()  # to the end: the bytes are checked against the run's record
    try:
        data = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise StructuralError(f"{path}: not valid JSON: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise StructuralError(f"{path}: expected a JSON array of objects (or JSONL)")
    return data


def _read_json(
    path: Path, spec: DatasetSpec, chunk_rows: int, check: FileCheck | None = None
) -> Iterator[RawChunk]:
    data = json_records(path, check)
    _present_columns(path, data, spec)
    for start in range(0, len(data), chunk_rows):
        part = data[start : start + chunk_rows]
        frame = records_frame(part, spec, start + 1)
        yield RawChunk(path, start + 1, frame, 0, records_absent(part, spec))


def _lines(handle: io.BufferedIOBase) -> Iterator[bytes | int]:
    """The lines of a binary file; a line over LINE_MAX_BYTES is read past in pieces and
    given as its length instead."""
    while True:
        line = handle.readline(LINE_MAX_BYTES + 1)
        if not line:
            return
        if len(line) <= LINE_MAX_BYTES or line.endswith(b"\n"):
            yield line
            continue
        length = len(line)
        while line and not line.endswith(b"\n"):
            line = handle.readline(LINE_MAX_BYTES)
            length += len(line)
        yield length


def _jsonl_handle(
    path: Path, span: tuple[int, int] | None, check: FileCheck | None
) -> io.BufferedIOBase:
    if span is None:
        return io.BufferedReader(CheckedFile(path, check), buffer_size=1 << 20)
    return io.BytesIO(_span_bytes(path, span, check, with_header=False)[1])


def _read_jsonl(
    path: Path,
    spec: DatasetSpec,
    chunk_rows: int,
    span: tuple[int, int] | None = None,
    check: FileCheck | None = None,
) -> Iterator[RawChunk]:
    columns_checked = False
    first = 1
    batch: list[object] = []
    with _jsonl_handle(path, span, check) as fh:
        for lineno, raw in enumerate(_lines(fh), start=1):
            if isinstance(raw, int):
                batch.append(
                    f"line {lineno}: a record of {raw:,} bytes (over {LINE_MAX_BYTES:,}), not read"
                )
            elif not raw.strip():
                batch.append({})  # keeps numbering aligned; rejected as an empty record
                continue
            else:
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    batch.append(orjson.loads(raw))
                except orjson.JSONDecodeError as err:
                    batch.append(f"line {lineno}: not valid JSON ({err})")
            if len(batch) >= chunk_rows:
                if not columns_checked:
                    _present_columns(path, batch, spec)
                    columns_checked = True
                frame = _jsonl_frame(batch, spec, first)
                yield RawChunk(path, first, frame, 0, records_absent(batch, spec))
                first += len(batch)
                batch = []
    if batch:
        if not columns_checked:
            _present_columns(path, batch, spec)
        frame = _jsonl_frame(batch, spec, first)
        yield RawChunk(path, first, frame, 0, records_absent(batch, spec))


def _jsonl_frame(batch: list[object], spec: DatasetSpec, first: int) -> pd.DataFrame:
    frame = records_frame(batch, spec, first)
    for i, rec in enumerate(batch):
        if isinstance(rec, str):  # the decode error recorded above
            frame.loc[i, RECORD_ERROR] = rec
        elif isinstance(rec, dict) and not rec:
            frame.loc[i, RECORD_ERROR] = "empty line"
    return frame


def _read_parquet(
    path: Path, spec: DatasetSpec, chunk_rows: int, check: FileCheck | None = None
) -> Iterator[RawChunk]:
    with CheckedFile(path, check) as handle:
        try:
            pf = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as err:
            raise StructuralError(f"{path}: not a readable Parquet file: {err}") from err
        yield from _parquet_chunks(path, pf, spec, chunk_rows)
        handle.finish()


def _spec_can_hold(kind: pa.DataType) -> bool:
    """Arrow types whose values have a text form the spec's types read (numbers, text,
    booleans, dates and timestamps); durations, intervals and times of day do not."""
    if pa.types.is_dictionary(kind):
        return _spec_can_hold(kind.value_type)
    return not (
        pa.types.is_nested(kind)
        or pa.types.is_duration(kind)
        or pa.types.is_interval(kind)
        or pa.types.is_time(kind)
    )


def _parquet_chunks(
    path: Path, pf: pq.ParquetFile, spec: DatasetSpec, chunk_rows: int
) -> Iterator[RawChunk]:
    rename = spec.headers
    names = list(pf.schema_arrow.names)
    _check_columns(path, [rename.get(n, n) for n in names], spec)
    wanted = [c for c in names if rename.get(c, c) in spec.columns]
    for name in wanted:
        kind = pf.schema_arrow.field(name).type
        if not _spec_can_hold(kind):
            what = "nested values" if pa.types.is_nested(kind) else "values"
            raise StructuralError(
                f"{path}: column {name} holds {what} of type {kind}, which no spec type "
                "holds (the spec's columns take one number, text, boolean or date a row)"
            )
    first = 1
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
            arrays = {}
            errors = pd.Series(pd.NA, index=pd.RangeIndex(batch.num_rows), dtype="string")
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                target = rename.get(name, name)
                kind = spec.columns[target].type
                arrays[target] = _parquet_column(name, kind, column, errors)
            frame = pa.table(arrays).to_pandas(types_mapper=TEXT_TYPES.get)
            if errors.notna().any():
                frame[RECORD_ERROR] = errors
            yield RawChunk(path, first, frame, 0)
            first += len(frame)
    except (pa.ArrowInvalid, OSError) as err:
        raise StructuralError(f"{path}: not a readable Parquet file: {err}") from err


def _typed_number(column: pa.Array, spec_type: str) -> bool:
    """A Parquet column read as numbers rather than text, for a float or integer spec
    column: float64, or integers a float64 holds exactly (whole numbers beyond 2^53 keep
    their own text in the quarantine). float32 is read as text: its shortest text is not
    the float64 it widens to."""
    kind = column.type
    if spec_type not in ("float", "integer"):
        return False
    if pa.types.is_float64(kind):
        return True
    if not pa.types.is_integer(kind):
        return False
    bounds = pc.min_max(column)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return low is None or (low > -EXACT_FLOAT and high < EXACT_FLOAT)


def _parquet_column(name: str, spec_type: str, column: pa.Array, errors: pd.Series) -> pa.Array:
    """One Parquet column as a raw column: float64 numbers for a number column read
    typed (`_typed_number`; the same values its text would read as), else text."""
    if _typed_number(column, spec_type):
        return pc.cast(column, pa.float64(), safe=False)
    return _parquet_text(name, column, errors)


def _parquet_text(name: str, column: pa.Array, errors: pd.Series) -> pa.Array:
    """One Parquet column as text, the way a CSV would spell it: NaN is missing, whole
    floats lose ".0", booleans are true/false; bytes that are not UTF-8 mark the row."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "true", "false")
    if pa.types.is_floating(column.type):
        return number_text(column)
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
    path: Path,
    spec: DatasetSpec,
    chunk_rows: int,
    span: tuple[int, int] | None = None,
    check: FileCheck | None = None,
) -> Iterator[RawChunk]:
    """Yield the chunks of one file, or of the records in the byte range `span` of a CSV
    or JSONL file (numbered from 1 within it); a structural problem raises StructuralError.

    `check`: the file's size and SHA-256 recorded when the run started (for a span, the
    digest of its bytes): bytes that differ raise SourceChanged (see `etl.reading`)."""
    suffix = path.suffix.lower()
    logger.debug("extracting %s%s", path, f" bytes {span[0]}-{span[1]}" if span else "")
    if span is not None and suffix not in SPLITTABLE:
        raise StructuralError(f"{path}: a {suffix} file is read whole, not by byte range")
    if suffix == ".csv":
        return _read_csv(path, spec, chunk_rows, span, check)
    if suffix == ".json":
        return _read_json(path, spec, chunk_rows, check)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, spec, chunk_rows, span, check)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, spec, chunk_rows, check)
    raise StructuralError(f"{path}: unsupported file type {suffix!r}")
