"""CSV values and field counts come from one reading of the bytes: whatever the quoting,
line endings, blank or whitespace lines, every row's values sit in their own columns and
every row of the wrong width is flagged at its own row number."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcycle.errors import SourceChanged, StructuralError
from mlcycle.etl.extract import RECORD_ERROR, read_file
from mlcycle.etl.reading import measure
from mlcycle.spec import DatasetSpec

COLUMNS = ["id", "a", "b", "c"]
SPEC = DatasetSpec.model_validate(
    {
        "name": "t",
        "id_column": "id",
        "target": {"column": "c", "labels": {"z": 1, "y": 0}, "positive": "z"},
        "columns": {
            "id": {"type": "string", "nullable": False},
            "a": {"type": "string", "nullable": True},
            "b": {"type": "string", "nullable": True},
            "c": {"type": "string", "nullable": True},
        },
    }
)

FIELD = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\tx;é')), max_size=6)
ENDING = st.sampled_from(["\n", "\r\n", "\r"])
FILLER = st.sampled_from(["", " ", "\t", "  \t "])  # blank and whitespace-only lines


class _Writer:
    """RFC 4180 quoting: a field holding a comma, a quote or any line break is quoted
    (the csv module leaves a newline unquoted when the line ending is a bare CR)."""

    def __init__(self, out: io.StringIO, ending: str) -> None:
        self.out, self.ending = out, ending

    def writerow(self, fields: list[str]) -> None:
        cells = [
            '"' + f.replace('"', '""') + '"' if any(ch in f for ch in ',"\r\n') else f
            for f in fields
        ]
        self.out.write(",".join(cells) + self.ending)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, list[tuple[list[str], int]]]:
    """A CSV text and, for each data row in order, (its fields, its width)."""
    ending = draw(ENDING)
    buf = io.StringIO()
    writer = _Writer(buf, ending)
    writer.writerow(COLUMNS)
    rows: list[tuple[list[str], int]] = []
    for i in range(draw(st.integers(0, 12))):
        for _ in range(draw(st.integers(0, 2))):
            buf.write(draw(FILLER) + ending)
        width = draw(st.sampled_from([4, 4, 4, 2, 5]))
        fields = [f"r{i}", *(draw(FIELD) for _ in range(width - 1))]
        if width == 1 or (not fields[-1] and width == len(COLUMNS)):
            fields[-1] = "z"  # a trailing empty field is still a field
        writer.writerow(fields)
        rows.append((fields, width))
    if draw(st.booleans()):
        buf.write(draw(FILLER) + ending)
    return buf.getvalue(), rows


@given(case=csv_files(), chunk=st.integers(1, 5))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_values_and_widths_agree_on_every_row(
    tmp_path: Path, case: tuple[str, list[tuple[list[str], int]]], chunk: int
) -> None:
    text, rows = case
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    chunks = list(read_file(path, SPEC, chunk, check=measure(path)))
    frame = pd.concat([c.frame for c in chunks], ignore_index=True) if chunks else pd.DataFrame()
    assert len(frame) == len(rows)
    expected_first = 1
    for c in chunks:  # rows are numbered without gaps, blank lines not counted
        assert c.first_row == expected_first
        expected_first += len(c.frame)
    for pos, (fields, width) in enumerate(rows):
        got = frame.iloc[pos]
        assert got["id"] == fields[0]
        error = got.get(RECORD_ERROR) if RECORD_ERROR in frame else None
        if width == len(COLUMNS):
            assert pd.isna(error), (pos, error)
            assert [got[c] for c in COLUMNS] == fields
        else:
            assert f"the row has {width} field(s) but the header has 4" in str(error)


def test_a_whitespace_line_neither_shifts_nor_cuts_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,a,b,c\nr1,x,y,z\n  \t \nr2,x,y,z\n\n\rr3,p,q,s\r\n")
    (only,) = list(read_file(path, SPEC, 100))
    assert only.frame[COLUMNS].values.tolist() == [
        ["r1", "x", "y", "z"],
        ["r2", "x", "y", "z"],
        ["r3", "p", "q", "s"],
    ]
    assert RECORD_ERROR not in only.frame or only.frame[RECORD_ERROR].isna().all()


def test_extra_fields_are_a_row_problem_not_a_file_problem(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,a,b,c\nr1,x,y,z,EXTRA\nr2,x,y,z\n")
    (only,) = list(read_file(path, SPEC, 100))
    assert (
        "the row has 5 field(s) but the header has 4: extra field(s)"
        in only.frame.loc[0, RECORD_ERROR]
    )
    assert pd.isna(only.frame.loc[1, RECORD_ERROR])


def test_a_file_that_changes_after_the_run_started_fails_the_reading(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,a,b,c\nr1,x,y,z\n")
    check = measure(path)
    path.write_text("id,a,b,c\nr1,x,y,Q\n")  # same size, other bytes
    with pytest.raises(SourceChanged, match=r"t\.csv: the file changed while the ETL read it"):
        list(read_file(path, SPEC, 100, check=check))


def test_a_second_reading_is_checked_before_its_rows_are_given(tmp_path: Path) -> None:
    """The write pass of a large input reads again: a change is caught read by read, so
    not one row parsed from the new bytes comes out."""
    path = tmp_path / "t.csv"
    path.write_text("id,a,b,c\n" + "".join(f"r{i},x,y,z\n" for i in range(1000)))
    check = measure(path)
    first = list(read_file(path, SPEC, 100, check=check))
    assert check.complete and sum(len(c.frame) for c in first) == 1000
    again = list(read_file(path, SPEC, 100, check=check))
    assert sum(len(c.frame) for c in again) == 1000
    path.write_text("id,a,b,c\n" + "".join(f"r{i},x,y,Z\n" for i in range(1000)))
    with pytest.raises(SourceChanged):
        next(iter(read_file(path, SPEC, 100, check=check)))


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_files_are_checked_too(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    line = '{"id": "r1", "a": "x"}'
    path.write_text(line + "\n" if suffix == ".jsonl" else f"[{line}]")
    check = measure(path)
    path.write_text(
        line.replace("x", "y") + ("\n" if suffix == ".jsonl" else "")
        if suffix == ".jsonl"
        else f"[{line.replace('x', 'y')}]"
    )
    with pytest.raises(SourceChanged):
        list(read_file(path, SPEC, 100, check=check))


def test_non_utf8_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,a,b,c\nr1,x,y,z\nr2,\xe9,y,z\n")
    with pytest.raises(StructuralError, match=r"not UTF-8 text \(an invalid byte at offset 21\)"):
        list(read_file(path, SPEC, 100, check=measure(path)))


def test_a_json_array_over_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.etl import extract

    monkeypatch.setattr(extract, "JSON_MAX_BYTES", 1_000)
    path = tmp_path / "big.json"
    path.write_text("[" + ",".join(['{"id": "r1", "a": "x"}'] * 100) + "]")
    with pytest.raises(StructuralError, match=r"big\.json: a JSON file of .* write it as JSONL"):
        list(read_file(path, SPEC, 100))


def test_a_jsonl_line_over_the_limit_is_a_rejected_record_read_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.etl import extract

    monkeypatch.setattr(extract, "LINE_MAX_BYTES", 64)
    path = tmp_path / "t.jsonl"
    huge = '{"id": "r2", "b": "", "a": "' + "x" * 500 + '"}'
    path.write_text('{"id": "r1", "a": "x", "b": ""}\n' + huge + '\n{"id": "r3", "b": ""}\n')
    (only,) = list(read_file(path, SPEC, 100, check=measure(path)))
    assert only.frame["id"].tolist()[0] == "r1" and only.frame["id"].tolist()[2] == "r3"
    length = len(huge) + 1  # with its newline
    assert (
        f"line 2: a record of {length} bytes (over 64), not read" in only.frame.loc[1, RECORD_ERROR]
    )


def test_parquet_types_no_spec_type_holds_are_refused_naming_the_column(tmp_path: Path) -> None:
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "id": ["r1"],
            "b": ["q"],
            "a": pa.array([datetime.timedelta(seconds=100)], pa.duration("us")),
        }
    )
    pq.write_table(table, path)
    with pytest.raises(StructuralError, match=r"column a holds values of type duration"):
        list(read_file(path, SPEC, 100))


def test_a_file_changed_between_hashing_and_reading_fails_the_run_and_loads_nothing(
    tmp_path: Path,
) -> None:
    from mlcycle.etl.pipeline import run_etl
    from mlcycle.etl.sources import FileSource
    from mlcycle.store.embedded import EmbeddedStore

    path = tmp_path / "t.csv"
    path.write_text("id,a,b,c\nr1,x,y,z\nr2,x,y,z\n")
    source = FileSource(path)
    source.open()  # the run's record of the bytes
    path.write_text("id,a,b,c\nr1,X,Y,Z\nr2,x,y,z\n")
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    with pytest.raises(SourceChanged, match=r"t\.csv: the file changed"):
        run_etl(SPEC, source, store)
    assert store.count("t") == 0
    (batch,) = store.find("etl_batches")
    assert batch["status"] == "failed" and "changed" in batch["error"]


def test_a_header_past_the_reader_s_first_guess_of_width_is_read_and_checked(
    tmp_path: Path,
) -> None:
    """More than 4,096 columns: the reader starts over with the right width, and the
    check of the bytes starts over with it (no false "changed")."""
    extra = [f"x{i}" for i in range(4_200)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(["id", "a", "b", "c", *extra]) + "\n" + ",".join(
        ["r1", "007", "y", "z", *["1"] * len(extra)]) + "\n")  # fmt: skip
    check = measure(path)
    (only,) = list(read_file(path, SPEC, 100, check=check))
    assert only.frame.loc[0, "a"] == "007" and check.complete
    (again,) = list(read_file(path, SPEC, 100, check=check))
    assert again.frame.loc[0, "id"] == "r1"
