"""The ETL stage end to end on every store backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlcycle.errors import RejectedShareExceeded, StructuralError
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import BATCHES, Store
from tests.data import counts

HEADER = (
    "Loan_ID,Gender,Married,Dependents,Education,Self_Employed,ApplicantIncome,"
    "CoapplicantIncome,LoanAmount,Loan_Amount_Term,Credit_History,Property_Area,Loan_Status"
)
DIRTY_ROWS = [
    "LP900001,Male,Yes,0,Graduate,No,5849,0,,360,1,Urban,Y",  # ok (missing LoanAmount)
    "LP900002,Male,Yes,1,Graduate,No,4583,1508,abc,360,1,Rural,N",  # bad number
    "LP900003,Robot,Yes,0,Graduate,Yes,3000,0,66,360,1,Urban,Y",  # unknown category
    ",Male,Yes,0,Not Graduate,No,2583,2358,120,360,1,Urban,Y",  # missing id
    "LP900001,Female,No,0,Graduate,No,6000,0,141,360,1,Urban,Y",  # duplicate id
    '"LP900006","Female","No","3+","Not Graduate","No","2333","1516","95","360","1","Urban","Y"',  # quoted
    "LP900007,Male,Yes,2,Graduate,No,-1e9,0,100,360,0,Semiurban,N",  # negative income
    "LP900008,male,yes,3,graduate,no,3036,2504,158,360,0,semiurban,n",  # case/alias fixes
]


def write_dirty(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dirty.csv"
    text = "\r\n".join([HEADER, *DIRTY_ROWS]) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # UTF-8 BOM + CRLF
    return path


def test_loan_files_load_then_rerun_changes_nothing(
    spec: DatasetSpec, store: Store, loan_dir: Path
) -> None:
    n = counts(loan_dir, spec)
    first = run_etl(spec, loan_dir, store)
    assert (first.rows_read, first.valid, first.rejected) == (n.total, n.total, 0)
    assert (first.inserted, first.updated, first.unchanged) == (n.total, 0, 0)
    assert {Path(f.path).name: f.rows for f in first.files} == {
        "train.csv": n.train,
        "test.csv": n.test,
    }

    labelled = store.read_snapshot("loan", require="Loan_Status")
    assert len(labelled) == n.train
    assert labelled["Loan_Status"].value_counts().to_dict() == n.labels
    assert store.count("loan") == n.total

    second = run_etl(spec, loan_dir, store)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, n.total)
    assert store.count("loan") == n.total
    batches = {b["_id"]: b for b in store.find(BATCHES)}
    assert batches[second.batch_id]["status"] == "succeeded"
    assert batches[first.batch_id]["files"][0]["sha256"]


def test_missing_cells_are_stored_as_null(spec: DatasetSpec, store: Store, loan_dir: Path) -> None:
    run_etl(spec, loan_dir / "train.csv", store)
    snap = store.read_snapshot("loan").set_index("Loan_ID")
    raw = pd.read_csv(loan_dir / "train.csv", dtype=str, keep_default_na=False)
    empty = raw.loc[raw["LoanAmount"] == "", "Loan_ID"].tolist()
    assert empty, "the file has rows without LoanAmount"
    assert snap.loc[empty, "LoanAmount"].isna().all()
    assert snap["LoanAmount"].isna().sum() == counts(loan_dir, spec).missing["LoanAmount"]


def test_dirty_file_is_partly_loaded_and_each_bad_row_quarantined(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    path = write_dirty(tmp_path / "raw")
    summary = run_etl(spec, path, store, max_rejected_share=0.9)
    assert summary.status == "succeeded"
    assert (summary.rows_read, summary.valid, summary.rejected) == (8, 3, 5)
    stored = store.read_snapshot("loan").set_index("Loan_ID")
    assert sorted(stored.index) == ["LP900001", "LP900006", "LP900008"]
    assert stored.loc["LP900001", "Gender"] == "Male"  # the first occurrence wins
    assert stored.loc[
        "LP900008", ["Gender", "Dependents", "Property_Area", "Loan_Status"]
    ].tolist() == [
        "Male",
        "3+",
        "Semiurban",
        "N",
    ]
    quarantine = {q["row"]: q for q in store.find("loan_quarantine")}
    assert sorted(quarantine) == [2, 3, 4, 5, 7]
    expected = {
        2: ("LoanAmount", "abc", "not a number"),
        3: ("Gender", "Robot", "not one of the allowed values"),
        4: ("Loan_ID", None, "missing value"),
        5: ("Loan_ID", "LP900001", "duplicate id: first seen at row 1"),
        7: ("ApplicantIncome", "-1e9", "below the minimum 0"),
    }
    for row, (column, value, reason) in expected.items():
        q = quarantine[row]
        assert (q["column"], q["value"]) == (column, value)
        assert reason in q["reason"]
        assert q["file"] == str(path)
        assert q["line"] == row + 1
        assert q["batch_id"] == summary.batch_id
        assert q["record"]["Loan_ID"] == ("" if row == 4 else f"LP90000{1 if row == 5 else row}")


def test_rerunning_a_dirty_file_does_not_duplicate_quarantine(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    path = write_dirty(tmp_path / "raw")
    run_etl(spec, path, store, max_rejected_share=0.9)
    again = run_etl(spec, path, store, max_rejected_share=0.9)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    assert store.count("loan_quarantine") == 5


def test_too_many_rejections_fail_the_run_and_leave_stored_rows_alone(
    spec: DatasetSpec, store: Store, tmp_path: Path, loan_dir: Path
) -> None:
    run_etl(spec, loan_dir / "train.csv", store)
    before = store.read_snapshot("loan").sort_values("Loan_ID").reset_index(drop=True)
    dirty = write_dirty(tmp_path / "raw")
    with pytest.raises(
        RejectedShareExceeded, match=r"5 of 8 rows rejected \(62.5% > the allowed 10.0%\)"
    ):
        run_etl(spec, dirty, store, max_rejected_share=0.1)
    after = store.read_snapshot("loan").sort_values("Loan_ID").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert store.count("loan_quarantine") == 5
    failed = [b for b in store.find(BATCHES) if b["status"] == "failed"]
    assert len(failed) == 1
    assert "rows rejected" in failed[0]["error"]


def test_changed_rows_are_updated_not_duplicated(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + "\n" + DIRTY_ROWS[0] + "\n" + DIRTY_ROWS[7] + "\n")
    run_etl(spec, folder, store)
    (folder / "a.csv").write_text(
        HEADER + "\n" + DIRTY_ROWS[0].replace("5849", "5850") + "\n" + DIRTY_ROWS[7] + "\n"
    )
    summary = run_etl(spec, folder, store)
    assert (summary.inserted, summary.updated, summary.unchanged) == (0, 1, 1)
    snap = store.read_snapshot("loan").set_index("Loan_ID")
    assert snap.loc["LP900001", "ApplicantIncome"] == 5850.0
    assert snap.loc["LP900001", "_batch_id"] == summary.batch_id
    assert snap.loc["LP900008", "_batch_id"] != summary.batch_id  # untouched row keeps its lineage


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HEADER.replace(",Credit_History", "") + "\n", "missing required column(s) Credit_History"),
        (HEADER.replace(",", ";") + "\n", "looks semicolon-delimited"),
        ("", "empty file"),
        ("\n \t\n\n", "empty file"),
    ],
)
def test_structural_problems_stop_the_run_before_any_write(
    spec: DatasetSpec, store: Store, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(content)
    with pytest.raises(StructuralError, match=r"broken\.csv") as info:
        run_etl(spec, path, store)
    assert message in str(info.value)
    assert store.count("loan") == 0
    assert store.count("loan_quarantine") == 0


def test_non_utf8_file_is_a_structural_error(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        (HEADER + "\nLP1,Male,Yes,0,Graduate,No,1,0,1,360,1,Urban,Y\n").encode() + b"\xe9\xff\n"
    )
    with pytest.raises(StructuralError, match=r"latin1\.csv: not UTF-8"):
        run_etl(spec, path, store)


def test_json_jsonl_parquet_and_csv_give_the_same_rows(
    spec: DatasetSpec, store: Store, tmp_path: Path, loan_dir: Path
) -> None:
    frame = pd.read_csv(loan_dir / "train.csv", dtype=str, keep_default_na=False).head(60)
    records = [
        {k: (v if v != "" else None) for k, v in r.items()} for r in frame.to_dict("records")
    ]
    # numbers as JSON numbers, like a real API export would have them
    for rec in records:
        for col in ("ApplicantIncome", "CoapplicantIncome", "LoanAmount", "Credit_History"):
            if rec[col] is not None:
                rec[col] = float(rec[col])
    variants = {
        "csv": lambda p: frame.to_csv(p, index=False),
        "json": lambda p: p.write_text(json.dumps(records)),
        "jsonl": lambda p: p.write_text("\n".join(json.dumps(r) for r in records) + "\n"),
        "parquet": lambda p: pq.write_table(pa.Table.from_pandas(pd.DataFrame(records)), p),
    }
    hashes = {}
    for kind, write in variants.items():
        folder = tmp_path / kind
        folder.mkdir()
        write(folder / f"loans.{kind}")
        summary = run_etl(spec, folder, store)
        assert (summary.rows_read, summary.rejected) == (60, 0), kind
        hashes[kind] = store.fetch_hashes("loan", list(frame["Loan_ID"]))
    assert hashes["csv"] == hashes["json"] == hashes["jsonl"] == hashes["parquet"]


def test_bad_jsonl_lines_are_quarantined_with_their_line(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    good = dict(zip(HEADER.split(","), DIRTY_ROWS[0].split(","), strict=True))
    path = tmp_path / "feed.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps([1, 2]) + "\n")
    summary = run_etl(spec, path, store, max_rejected_share=1.0)
    assert (summary.valid, summary.rejected) == (1, 2)
    reasons = {q["line"]: q["reason"] for q in store.find("loan_quarantine")}
    assert "not valid JSON" in reasons[2]
    assert "not an object" in reasons[3]


def test_small_chunks_give_the_same_result_and_catch_duplicates_across_chunks(
    spec: DatasetSpec, store: Store, tmp_path: Path, loan_dir: Path
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(loan_dir / "train.csv", folder / "a.csv")
    shutil.copy(loan_dir / "train.csv", folder / "b.csv")  # every id again in a second file
    # cache_rows=100: too big to keep, so the write pass reads and validates again
    summary = run_etl(spec, folder, store, chunk_rows=50, max_rejected_share=0.6, cache_rows=100)
    n = counts(loan_dir, spec).train
    assert (summary.valid, summary.rejected, summary.inserted) == (n, n, n)
    assert store.count("loan") == n
    q = store.find("loan_quarantine", {"row": 1})
    assert any("first seen at a.csv row 1" in d["reason"] for d in q)
