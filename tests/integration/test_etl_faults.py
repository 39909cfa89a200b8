"""Faults a hostile run found in the ETL: each reproduced, on every store backend where
the store matters."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlcycle.datagen import generate
from mlcycle.errors import StructuralError, TrainingError
from mlcycle.etl.pipeline import EXCERPT_CHARS, run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.snapshot import load_snapshot

pytestmark = pytest.mark.integration


def _good(spec: DatasetSpec, folder: Path, rows: int = 50, seed: int = 5) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    frame = generate(spec, rows, seed=seed)
    frame.to_csv(folder / "good.csv", index=False)
    return frame


def test_a_cut_last_line_is_rejected_and_never_changes_the_stored_row(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    frame = _good(spec, tmp_path / "a")
    run_etl(spec, tmp_path / "a", store)
    victim = frame.iloc[-1]["Loan_ID"]
    before = store.read_snapshot("loan").set_index("Loan_ID").loc[victim].to_dict()
    text = (tmp_path / "a" / "good.csv").read_text().rstrip("\n")
    cut = tmp_path / "b" / "cut.csv"
    cut.parent.mkdir()
    cut.write_text(text[: text.rindex(",") - 12] + "\n")  # the last line loses its tail
    summary = run_etl(spec, cut, store, max_rejected_share=0.5)
    assert summary.rejected == 1
    (q,) = store.find("loan_quarantine", {"row": len(frame)})
    assert "field(s) but the header has 13" in q["reason"]
    after = store.read_snapshot("loan").set_index("Loan_ID").loc[victim].to_dict()
    assert after == before


def test_a_number_beyond_the_shared_bound_is_rejected_by_the_etl(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    frame = _good(spec, tmp_path / "raw")
    frame.loc[3, "ApplicantIncome"] = 1e308
    frame.to_csv(tmp_path / "raw" / "good.csv", index=False)
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    summary = run_etl(spec, tmp_path / "raw", store)
    assert summary.rejected == 1
    (q,) = store.find("loan_quarantine")
    assert q["column"] == "ApplicantIncome" and "beyond ±1e+15" in q["reason"]


def test_training_names_rows_with_non_finite_numbers(spec: DatasetSpec, tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    frame = generate(spec, 40, seed=1)
    docs = []
    for rec in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        docs.append({**rec, "_id": rec["Loan_ID"], "_hash": "h", "_batch_id": "b"})
    docs[7]["LoanAmount"] = 1e300  # written around the ETL, e.g. by another tool
    store.write_rows("loan", docs, [])
    with pytest.raises(TrainingError, match=rf"{docs[7]['Loan_ID']} \(LoanAmount\)"):
        load_snapshot(store, spec)


def test_parquet_nan_huge_and_non_utf8_values_are_row_problems(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    frame = _good(spec, raw)
    table = generate(spec, 6, seed=9)
    table["LoanAmount"] = [np.nan, 2.0**53, 1e300, 100.0, 120.0, 130.0]
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    gender = pa.array([b"Male", b"\xff\xfe", b"Female", b"Male", b"Male", b"Female"])
    arrow = arrow.set_column(arrow.schema.get_field_index("Gender"), "Gender", gender)
    pq.write_table(arrow, raw / "more.parquet")
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    summary = run_etl(spec, raw, store, max_rejected_share=0.5)
    assert summary.rows_read == len(frame) + 6
    reasons = {q["row"]: q["reason"] for q in store.find("loan_quarantine")}
    assert sorted(reasons) == [2, 3]
    assert "not UTF-8" in reasons[2] or "not UTF-8" in str(store.find("loan_quarantine"))
    assert "beyond" in reasons[3]
    stored = store.read_snapshot("loan").set_index("Loan_ID")
    assert pd.isna(stored.loc[table["Loan_ID"][0], "LoanAmount"])  # NaN is a missing value


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("case", ["list column", "symlink loop", "dangling symlink"])
def test_unreadable_inputs_exit_2_naming_the_file_and_write_nothing(
    case: str, spec: DatasetSpec, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    _good(spec, raw)
    if case == "list column":
        table = pa.Table.from_pandas(generate(spec, 3, seed=2), preserve_index=False)
        nested = pa.array([[1], [2, 3], []])
        table = table.set_column(table.schema.get_field_index("LoanAmount"), "LoanAmount", nested)
        pq.write_table(table, raw / "bad.parquet")
        name = "bad.parquet"
    elif case == "symlink loop":
        (raw / "loop.csv").symlink_to(raw / "loop.csv")
        name = "loop.csv"
    else:
        (raw / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
        name = "gone.csv"
    env = {"MLCYCLE_DATA_DIR": str(tmp_path / "data"), "MLCYCLE_RAW_DIR": str(raw)}
    out = _cli("etl", env=env)
    assert out.returncode == 2, out.stderr
    assert name in out.stderr and "Traceback" not in out.stderr
    store = tmp_path / "data" / "store.sqlite3"
    assert not store.exists() or EmbeddedStore(store).count("loan") == 0


def test_a_folder_named_like_a_data_file_is_left_out(spec: DatasetSpec, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    frame = _good(spec, raw)
    (raw / "x.csv").mkdir()
    summary = run_etl(spec, raw, EmbeddedStore(tmp_path / "s.sqlite3"))
    assert summary.rows_read == len(frame)
    assert [Path(f.path).name for f in summary.files] == ["good.csv"]


def test_structural_errors_name_the_path(spec: DatasetSpec, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "loop.jsonl").symlink_to(raw / "loop.jsonl")
    with pytest.raises(StructuralError, match=r"loop.jsonl: .*symlink loop"):
        run_etl(spec, raw, EmbeddedStore(tmp_path / "s.sqlite3"))


@pytest.mark.slow
def test_a_locked_embedded_store_is_a_clear_error(spec: DatasetSpec, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _good(spec, raw)
    data = tmp_path / "data"
    data.mkdir()
    holder = sqlite3.connect(data / "store.sqlite3", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = _cli("etl", env={"MLCYCLE_DATA_DIR": str(data), "MLCYCLE_RAW_DIR": str(raw)})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.returncode == 1, out.stderr
    assert "locked" in out.stderr and "store.sqlite3" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_huge_bad_field_is_quarantined_as_an_excerpt(spec: DatasetSpec, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    frame = _good(spec, raw)
    frame.loc[0, "Gender"] = "x" * 6_000_000  # a 6 MB bad value
    frame.loc[1, "Gender"] = "y" * 900  # long, under the reader's cut: an excerpt
    frame.to_csv(raw / "good.csv", index=False)
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    run_etl(spec, raw, store)
    huge, long = sorted(store.find("loan_quarantine"), key=lambda q: q["row"])
    assert "a value of 6,000,000 characters" in huge["reason"] and "sha256 " in huge["reason"]
    assert len(huge["record"]["Gender"]) <= EXCERPT_CHARS
    assert long["value"]["length"] == 900 and len(long["value"]["excerpt"]) == EXCERPT_CHARS
    assert len(long["value"]["sha256"]) == 64
    assert len(json.dumps(huge)) < 10_000 and len(json.dumps(long)) < 10_000
