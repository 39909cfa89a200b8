"""Sources, origins and the shared ETL steps (no broker, no server)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from types import SimpleNamespace

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlcycle.datagen import write_demo
from mlcycle.errors import StructuralError
from mlcycle.etl.extract import read_file
from mlcycle.etl.partitions import plan_parts
from mlcycle.etl.sources import FileOrigin, FileSource, TopicOrigin
from mlcycle.etl.steps import DuplicateTracker, quarantine_docs
from mlcycle.spec import DatasetSpec
from mlcycle.stream.consumer import dead_letter_headers
from mlcycle.stream.publish import file_records
from tests.data import LOAN_RECORD


def _frame(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.array(ids, dtype="string")})


def test_duplicate_tracker_agrees_with_a_dict_over_many_chunks() -> None:
    rng = random.Random(7)
    tracker = DuplicateTracker()
    seen: dict[str, tuple[int, int]] = {}
    parts = ["a.csv", "b.csv"]
    for part_no, part in enumerate(parts):
        tracker.parts.append(part)
        first_row = 1
        for _ in range(6):
            ids = [f"ID{rng.randrange(40_000)}" for _ in range(5_000)]
            accept, issues = tracker.split(first_row, _frame(ids), "id")
            expected = []
            for pos, ident in enumerate(ids):
                if ident in seen:
                    expected.append(pos)
                else:
                    seen[ident] = (part_no, first_row + pos)
            assert sorted(issues["pos"].tolist()) == expected
            assert not accept[expected].any() and accept.sum() == len(ids) - len(expected)
            for ident, reason in zip(issues["value"], issues["reason"], strict=True):
                p_no, row = seen[ident]
                where = f"row {row}" if p_no == part_no else f"{parts[p_no]} row {row}"
                assert reason == f"duplicate id: first seen at {where}"
            first_row += len(ids)
    assert len(tracker) == len(seen)


def test_duplicate_tracker_keeps_24_bytes_an_id() -> None:
    tracker = DuplicateTracker()
    tracker.parts.append("f")
    tracker.split(1, _frame([f"X{i}" for i in range(100_000)]), "id")
    size = tracker.h1.nbytes + tracker.h2.nbytes + tracker.at.nbytes
    assert size == 24 * 100_000


def test_origins_name_quarantine_entries_and_lineage() -> None:
    f = FileOrigin("/in/a.csv", "ab" * 32, first_row=101, line_offset=1)
    assert f.quarantine_id(0) == "abababababababab:101"
    assert f.describe(2) == {"file": "/in/a.csv", "file_sha256": "ab" * 32, "row": 103, "line": 104}
    assert f.refs([0, 5]) == ["file:abababababababab:101", "file:abababababababab:106"]
    t = TopicOrigin("loans", [0, 2], [17, 40], [b"k".decode(), None])
    assert t.quarantine_id(1) == "kafka:loans:2:40"
    assert t.describe(0) == {"topic": "loans", "partition": 0, "offset": 17, "key": "k"}
    assert t.refs([1, 0]) == ["kafka:loans:2:40", "kafka:loans:0:17"]


def test_quarantine_entries_carry_the_origin(spec: DatasetSpec) -> None:
    raw = pd.DataFrame({"Loan_ID": ["A", "B"], "Gender": ["x" * 300, "Male"]}, dtype="string")
    issues = pd.DataFrame(
        [(0, "Gender", "x" * 300, "not one of the allowed values")],
        columns=["pos", "column", "value", "reason"],
    )
    (doc,) = quarantine_docs(raw, issues, TopicOrigin("t", [3], [9], ["A"]), "b1")
    assert doc["_id"] == "kafka:t:3:9" and (doc["topic"], doc["offset"]) == ("t", 9)
    assert doc["value"]["length"] == 300 and len(doc["value"]["excerpt"]) == 256
    msg = SimpleNamespace(topic=lambda: "t", partition=lambda: 3, offset=lambda: 9)
    headers = dict(dead_letter_headers(doc, msg, "loan", "b1"))
    assert headers["mlcycle.error.column"] == b"Gender"
    assert headers["__connect.errors.offset"] == b"9"


def test_file_source_checks_files_before_reading(spec: DatasetSpec, tmp_path: Path) -> None:
    with pytest.raises(StructuralError, match="no such file"):
        FileSource(tmp_path / "missing.csv")
    write_demo(spec, tmp_path / "a.csv", 1, seed=1)
    source = FileSource(tmp_path)
    (part,) = source.open()
    assert len(part.sha256) == 64
    (item,) = list(source.chunks(spec, 10))
    assert item.part is part and item.origin.quarantine_id(0) == f"{part.sha256[:16]}:1"


def test_publish_reads_records_as_the_file_has_them(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_bytes(b'\xef\xbb\xbfid,x,y\r\n1,"a,b",\r\n\r\n2,c\r\n')
    got = [(k, orjson.loads(v)) for k, v in file_records(csv, "id")]
    assert got == [(b"1", {"id": "1", "x": "a,b", "y": ""}), (b"2", {"id": "2", "x": "c"})]

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"id": 5, "x": 1.5}\n{broken\n\n[1]\n')
    assert list(file_records(jsonl, "id")) == [
        (b"5", b'{"id": 5, "x": 1.5}'),
        (None, b"{broken"),
        (None, b"[1]"),
    ]

    js = tmp_path / "a.json"
    js.write_bytes(orjson.dumps({"records": [{"id": "z", "n": None}]}))
    assert [(k, orjson.loads(v)) for k, v in file_records(js, "id")] == [
        (b"z", {"id": "z", "n": None})
    ]

    pqt = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["p"], "v": [2]}), pqt)
    assert [(k, orjson.loads(v)) for k, v in file_records(pqt, "id")] == [
        (b"p", {"id": "p", "v": 2})
    ]

    with pytest.raises(StructuralError, match="unsupported file type"):
        file_records(tmp_path / "a.txt", "id")


def test_parts_of_a_csv_read_as_the_whole_file(spec: DatasetSpec, tmp_path: Path) -> None:
    path = write_demo(spec, tmp_path / "a.csv", 3_000, seed=4)
    lines = path.read_text().splitlines()
    lines.insert(500, '"LP-X","Ma\nle",Yes,0,"Not\n Graduate",No,"4,000",0,100,360,1,Urban,Y')
    lines.insert(900, "")
    lines.insert(1_200, 'LP-Y,Male,Yes,0,"say ""hi""\n",No,1,0,1,360,1,Urban,Y')
    path.write_text("\n".join(lines) + "\n")
    whole = pd.concat([c.frame for c in read_file(path, spec, 700)], ignore_index=True)
    source = FileSource(path)
    parts = plan_parts(source, part_bytes=20_000)
    assert len(parts) > 5 and all(p.span for p in parts)
    pieces = [c.frame for p in parts for c in read_file(Path(p.path), spec, 700, p.span)]
    joined = pd.concat(pieces, ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole)
    spans = [p.span for p in parts]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] == path.stat().st_size


def test_parts_of_a_jsonl_file_and_whole_formats(spec: DatasetSpec, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({**LOAN_RECORD, "Loan_ID": f"L{i}", "x": "a\\nb"}) + b"\n"
            for i in range(2_000)
        )
    )
    parts = plan_parts(FileSource(path), part_bytes=5_000)
    assert len(parts) > 3
    ids = [v for p in parts for c in read_file(path, spec, 300, p.span) for v in c.frame["Loan_ID"]]
    assert ids == [f"L{i}" for i in range(2_000)]
    pq.write_table(pa.table({"Loan_ID": ["p"]}), tmp_path / "b.parquet")
    (whole,) = plan_parts(FileSource(tmp_path / "b.parquet"), part_bytes=1)
    assert whole.span is None
